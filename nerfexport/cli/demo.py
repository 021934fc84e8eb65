"""``nerfexport demo``: the whole pipeline on the embedded scene."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nerfexport.cli.app import app, guard, say
from nerfexport.cli.progress import Reporter


@app.command()
@guard
def demo(out: Annotated[Path, typer.Option("-o", "--out", help="folder for everything the demo writes")] = Path(
             "demo-out"),
         steps: Annotated[int, typer.Option(help="training steps on the embedded scene")] = 600,
         size: Annotated[int, typer.Option(help="image size of the embedded scene")] = 64,
         width: Annotated[int, typer.Option(help="width to shrink to")] = 128,
         finetune: Annotated[int, typer.Option(help="distillation steps after shrinking")] = 300) -> None:
    """The whole pipeline on the embedded scene: dataset, train, shrink, export fp32 and int8, render, bench."""
    from nerfexport.demo import run_demo
    with Reporter("demo") as report:
        d = run_demo(out, steps, size, width, finetune, report)
    say(d.table)
    say(f"done. dataset {d.data}/, models {d.model} and {d.shrunk} (report {d.shrunk.with_suffix('.json')}), "
        f"bundles {d.bundles['fp32']}/ and {d.bundles['int8']}/, renders {d.renders}/, "
        f"benchmark {d.bench}/bench.md with figures {d.bench}/pareto.png and {d.bench}/grid.png")
