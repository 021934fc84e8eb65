"""``nerfexport sweep``: many recipes on many scenes, as Ray tasks, cached per cell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import app, guard, say


def _progress(e: dict) -> None:
    if e["event"] == "plan":
        say(f"{e['cells']} cells, {e['cached']} already finished; {e['stages']} stages to run")
    elif e["event"] == "start":
        say(f"running on {e['where']}")
    elif e["event"] == "cell":
        what = f"{e['psnr']:.2f} dB" if e["status"] == "ok" and e.get("psnr") is not None else e.get("error") or ""
        say(f"[{e['done']}/{e['total']}] {e['scene']} {e['label']}: {e['status']} {what}".rstrip())


@app.command()
@guard
def sweep(file: Annotated[Path, typer.Argument(help="the sweep file (TOML: scenes and axes; docs/sweep.md)")],
          out: Annotated[Path, typer.Option("-o", "--out", help="folder for the table, the figures and the cache "
                                            "of finished cells (a rerun resumes)")] = Path("sweep-out"),
          address: Annotated[Optional[str], typer.Option(help="Ray cluster: HOST:PORT from a node of it, or "
                                                         "ray://HOST:10001 (default: RAY_ADDRESS, else a Ray "
                                                         "started on this machine)")] = None,
          max_ms: Annotated[Optional[float], typer.Option(help="the best cell per scene renders a frame in at "
                                                          "most this many ms")] = None,
          max_mb: Annotated[Optional[float], typer.Option(help="... and stores at most this many MB")] = None,
          num_cpus: Annotated[Optional[int], typer.Option(help="CPUs of the local Ray (default: all)")] = None,
          doc: Annotated[Optional[Path], typer.Option(help="also write the Markdown (the study table when the "
                                                      "file names a report) to this file")] = None) -> None:
    """Run every combination of a sweep file's axes on its scenes (shrink, export, bench) on Ray."""
    from nerfexport.sweep.run import run_sweep
    try:
        res = run_sweep(file, out, address, max_ms, max_mb, num_cpus, _progress)
    except KeyboardInterrupt:
        say(f"finished cells are kept in {out}/cells; run the same command again to resume")
        raise
    report = next((f for f in res.files if f.endswith("report.md")), None)
    text = Path(report or res.files[1]).read_text()
    say(text)
    if doc is not None:
        from nerfexport.data.fileio import atomic_write
        atomic_write(doc, lambda f: f.write(text.encode()))
        res.files.append(str(doc))
    for note in res.notes:
        say(note)
    say(f"{res.executed} cells run ({res.failed} failed), {res.cached} taken from {out}/cells, in "
        f"{res.seconds:.0f} s" + (f" on {res.where}" if res.where else ""))
    say("wrote " + ", ".join(res.files))
    if res.failed:
        raise typer.Exit(1)
