"""``nerfexport view``: the bundles in a local web page with an orbit camera (the deploy side: no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nerfexport.cli.app import DEFAULT_BUNDLE, app, default_file, guard, say


def _event(e: dict) -> None:
    if e["event"] == "warning":
        typer.echo(f"warning: {e['text']}", err=True)
    elif e["event"] == "ready":
        for line in e["bundles"]:
            say(f"bundle {line}")
        say(f"camera starts at the {e['start']}")
        say(f"viewer at {e['url']} (Ctrl-C to stop)")


@app.command()
@guard
def view(bundles: Annotated[Optional[list[Path]], typer.Argument(help="bundle folder(s), shown side by side with "
                                                                 "one camera (default: ./bundle)")] = None,
         runtime: Annotated[str, typer.Option(help="ort-cpu, ort-cuda, ort-trt, tensorrt, or a TOML file")] = "ort-cpu",
         port: Annotated[int, typer.Option(help="port to listen on (0: any free one)")] = 7007,
         host: Annotated[str, typer.Option(help="address to listen on; anything but localhost is reachable from "
                                           "other machines")] = "127.0.0.1",
         early_stop: Annotated[Optional[float], typer.Option(help="transmittance below which a ray stops when "
                                                            "skipping (default 1e-3)")] = None,
         ) -> None:
    """Serve a page that renders the bundle(s) with the lean renderer as you orbit the camera."""
    from nerfexport.deploy.viewer import serve
    paths = bundles or [default_file(None, (DEFAULT_BUNDLE, "the bundle"))]
    frames = serve(paths, runtime, host, port, early_stop, _event)
    say(f"viewer stopped after {frames} frame(s)")
