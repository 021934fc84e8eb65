"""The ``nerfexport`` command line: one module per command group; each command parses its
options, calls one library function and prints (``cli/app.py`` holds what they share)."""

from nerfexport.cli.app import app, main
# registering the commands, in the order of the stages (the order of `nerfexport --help`)
from nerfexport.cli import train, shrink, export, deploy, view, bench, sweep, demo  # noqa: E402,F401,I001

__all__ = ["app", "main"]
