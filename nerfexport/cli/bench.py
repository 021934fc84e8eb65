"""``nerfexport bench``: frame time, throughput, quality and size of bundles and runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import DEFAULT_BUNDLE, DEFAULT_MODEL, app, guard, say
from nerfexport.cli.progress import Reporter


@app.command()
@guard
def bench(items: Annotated[Optional[list[str]], typer.Argument(help="PATH@RUNTIME or LABEL=PATH@RUNTIME, with "
                                                               ":plain appended to render without skipping or "
                                                               ":density to place the fine samples from the "
                                                               "bundle's density grid; the "
                                                               "first is the reference (default: model.pt@torch "
                                                               "bundle@ort-cpu)")] = None,
          out: Annotated[Path, typer.Option("-o", "--out", help="folder for bench.json, bench.md, figures")] = Path(
              "bench-out"),
          data: Annotated[Optional[Path], typer.Option("--data", help="dataset (default: recorded in the first "
                                                       "item)")] = None,
          downscale: Annotated[Optional[int], typer.Option()] = None,
          test_every: Annotated[Optional[int], typer.Option()] = None,
          views: Annotated[int, typer.Option(help="first N test views")] = 10,
          repeat: Annotated[int, typer.Option(help="renders of each view (after one warm-up frame)")] = 3,
          samples: Annotated[Optional[str], typer.Option(help="coarse,fine samples per ray for every item "
                                                         "(default: each item's own)")] = None,
          peak: Annotated[bool, typer.Option("--peak/--no-peak", help="measure the int8 and fp32 GEMM peak first "
                                             "(for the network's fraction of peak)")] = True) -> None:
    """Benchmark bundles and runtimes on the same views: frame time, throughput, quality, size, memory."""
    from nerfexport.bench.bench import run_bench_items
    from nerfexport.data.datasets import DataArgs
    if not items:
        items = [f"{DEFAULT_MODEL}@torch", f"{DEFAULT_BUNDLE}@ort-cpu"]
        say(f"benchmarking {' and '.join(items)} (the files in this folder)")
    with Reporter("bench") as report:
        doc = run_bench_items(items, out, DataArgs(data, downscale, None, test_every), views, repeat, samples, peak,
                              report)
    say((out / "bench.md").read_text())
    say("wrote " + ", ".join(doc["files"]))
