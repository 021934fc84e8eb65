"""The ``nerfexport`` command line: one module per command group; each command parses its
options, calls one library function and prints (see ``cli/app.py`` for what they share)."""

from nerfexport.cli.app import app, main
from nerfexport.cli import bench, deploy, demo, export, shrink, train  # noqa: F401,E402  (register the commands)

__all__ = ["app", "main"]
