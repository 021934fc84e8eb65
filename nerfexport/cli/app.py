"""The ``nerfexport`` Typer app and what every command shares: one-line errors, the hint for a
missing extra, signal handling, and the default files of a working folder."""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

DEFAULT_MODEL = Path("model.pt")
SHRUNK_MODEL = Path("shrunk.pt")
DEFAULT_BUNDLE = Path("bundle")
# a package an extra brings -> the extra (a command whose package is missing names it)
EXTRAS = {"torch": "train", "onnxruntime.quantization": "train", "matplotlib": "bench",
          "skimage": "test", "tensorrt": "tensorrt", "cuda": "tensorrt", "ray": "sweep"}


class OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one ``error:`` line and exit 2,
    instead of click's usage block or rich's panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except Exception as e:
            if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
                raise
            if type(e).__name__ == "NoArgsIsHelpError":   # bare `nerfexport`: the help text
                typer.echo(e.format_message())
            else:
                typer.echo(f"error: {e.format_message()}", err=True)
            code = e.exit_code
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Ship a NeRF to a device: train, shrink, export, render and benchmark.")


class UserError(Exception):
    """Bad input found by the command line itself: one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` and clean-up runs
    (temporary folders are removed) as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []   # the termination signals this process got


def _terminate(signum, frame) -> None:
    _received.append(signum)
    raise Terminated(signum)


def _terminated_line(signum: int) -> None:
    fail(f"terminated by {signal.Signals(signum).name}; nothing was left half-written", 128 + signum)


def fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:400] if text else type(e).__name__


def _is_input_error(e: Exception) -> bool:
    """nerfexport's own errors are ValueError / RuntimeError subclasses defined in the package
    (DatasetError, CheckpointError, BundleError, RuntimeUnavailable, ...): bad input or a missing
    capability, reported in one line. Anything else is a bug and keeps its traceback."""
    return isinstance(e, (ValueError, RuntimeError)) and type(e).__module__.startswith("nerfexport.")


def guard(fn):
    """Turn the library's input errors into one clear line and a non-zero exit; a missing
    optional package into the extra that brings it."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except (UserError, FileExistsError) as e:
            fail(_first_line(e))
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            extra = EXTRAS.get(e.name or "") or EXTRAS.get(top)
            if extra is None:
                raise
            fail(f"this command needs {top}, which nerfexport's deploy install leaves out: "
                 f"pip install 'nerfexport[{extra}]'")
        except OSError as e:
            fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        except Terminated as e:
            _terminated_line(e.signum)
        except KeyboardInterrupt:
            fail("interrupted; nothing was left half-written", 130)
        except Exception as e:
            if _received:   # the signal arrived inside an extension (an import, a kernel) and came out as another error
                _terminated_line(_received[-1])
            if _is_input_error(e):
                fail(_first_line(e))
            if type(e).__module__.startswith("onnxruntime"):   # a graph onnxruntime cannot load
                fail(f"onnxruntime: {_first_line(e)[:300]}")
            raise
    return wrapper


def say(text: str) -> None:
    typer.echo(text)


def default_file(given: Path | None, *candidates: tuple[Path, str]) -> Path:
    """``given``, else the first of ``candidates`` ``(path, what)`` that exists here (said in one line)."""
    if given is not None:
        return given
    for p, what in candidates:
        if p.exists():
            say(f"using {p}{'/' if p.is_dir() else ''} ({what} in this folder)")
            return p
    names = " or ".join(f"{p}{'/' if p.suffix == '' else ''}" for p, _ in candidates)
    raise UserError(f"nothing given and no {names} in this folder")


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    app()
