"""Untrusted files and flags, bounded and checked at one place (no torch: the render path uses this).

- Outputs: :func:`check_output_file` and :func:`check_output_folder` decide whether an output
  may be written: a folder is replaced only when it is nerfexport's own earlier output of the
  same kind (or ``force``), never when it holds anything else, is a symlink, or contains an input;
  a file output is never a symlink and never a non-regular file (a character device such as
  ``/dev/null`` is written through, not replaced).
- Reading: :func:`read_regular` reads regular files only, at most ``max_bytes``;
  :func:`loads_json` / :func:`loads_toml` bound the nesting depth before parsing.
- Values: :func:`finite` (a float in range), :func:`check_memory` (what a size read from a file
  implies, against :data:`MEMORY_LIMIT`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
from pathlib import Path

MARKER = ".nerfexport"            # a folder nerfexport wrote holds this file, saying which kind
MAX_DEPTH = 32                    # nesting of JSON / TOML documents
MAX_TEXT = 16 << 20               # JSON / TOML inputs larger than this are refused


def memory_limit() -> int:
    """Bytes that what an input's sizes imply may take: ``NERFEXPORT_MEMORY_LIMIT_GB`` when set,
    else half of the physical memory, and at most half of the address-space limit (``ulimit -v``)."""
    v = os.environ.get("NERFEXPORT_MEMORY_LIMIT_GB")
    try:
        if v and math.isfinite(float(v)) and float(v) > 0:
            return int(float(v) * (1 << 30))
    except ValueError:
        pass
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        limit = 4 << 30
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            limit = min(limit, soft // 2)
    except (ImportError, OSError, ValueError):
        pass
    return max(int(limit), 256 << 20)


MEMORY_LIMIT = None               # None: memory_limit() at each check


class UnsafeInput(ValueError):
    """An input or output refused before anything is read, allocated or replaced (one sentence)."""


# ---------------------------------------------------------------- values

def finite(x, name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> float:
    """``x`` as a float, refused unless it is a finite number in the range (open ends as asked)."""
    try:
        ok = not isinstance(x, (bool, str)) and math.isfinite(float(x))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if ok:
        v = float(x)
        ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        rng = ""
        if lo is not None or hi is not None:
            rng = (f" in {'(' if lo_open else '['}{lo if lo is not None else '-inf'}, "
                   f"{hi if hi is not None else 'inf'}{')' if hi_open else ']'}")
        raise UnsafeInput(f"{name} must be a finite number{rng}, not {x!r}")
    return float(x)


def check_memory(nbytes: float, what: str, limit: int | None = None) -> None:
    """Refuse ``what`` when the ``nbytes`` it implies exceed the limit (before allocating them)."""
    limit = limit if limit is not None else MEMORY_LIMIT if MEMORY_LIMIT is not None else memory_limit()
    if not nbytes <= limit:
        raise UnsafeInput(f"{what} would take {nbytes / (1 << 30):.1f} GiB, more than the "
                          f"{limit / (1 << 30):.1f} GiB limit (NERFEXPORT_MEMORY_LIMIT_GB)")


# ---------------------------------------------------------------- reading

def regular_file(path: str | Path, what: str = "file") -> Path:
    """``path`` if it is (or leads through symlinks to) a regular file; a FIFO, device, socket or
    folder is refused before it is opened."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnsafeInput(f"{what} {path} does not exist") from None
    except OSError as e:
        raise UnsafeInput(f"{what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeInput(f"{what} {path} is not a regular file")
    return path


def read_regular(path: str | Path, max_bytes: int = MAX_TEXT, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, refused if larger than ``max_bytes``."""
    path = regular_file(path, what)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > max_bytes or not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UnsafeInput(f"{what} {path} is larger than {max_bytes:,} bytes")
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UnsafeInput(f"{what} {path}: {e.strerror}") from None
    if len(data) > max_bytes:
        raise UnsafeInput(f"{what} {path} is larger than {max_bytes:,} bytes")
    return data


def check_depth(text: str, what: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON or TOML text nested deeper than ``limit`` brackets (outside strings)."""
    depth, in_str, esc, quote = 0, False, False, ""
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\" and quote == '"':
                esc = True
            elif ch == quote:
                in_str = False
        elif ch in "\"'":
            in_str, quote = True, ch
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise UnsafeInput(f"{what} is nested more than {limit} levels deep")
        elif ch in "]}":
            depth -= 1


def loads_json(text: str | bytes, what: str):
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeInput(f"{what} is not UTF-8 text") from None
    check_depth(text, what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UnsafeInput(f"{what} is not valid JSON ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})") from None


def loads_toml(text: str | bytes, what: str):
    import tomllib
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeInput(f"{what} is not UTF-8 text") from None
    check_depth(text, what)
    # dotted keys ("a.b.c.d = 1") nest too: bound them by the dots outside strings per line
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        if "=" in line and key.count(".") > MAX_DEPTH:
            raise UnsafeInput(f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise UnsafeInput(f"{what} is not valid TOML ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})") from None


def load_json(path: str | Path, what: str = "JSON file", max_bytes: int = MAX_TEXT):
    return loads_json(read_regular(path, max_bytes, what), f"{what} {path}")


def load_toml(path: str | Path, what: str = "TOML file", max_bytes: int = MAX_TEXT):
    return loads_toml(read_regular(path, max_bytes, what), f"{what} {path}")


# ---------------------------------------------------------------- outputs

def _real(p: str | Path) -> str:
    return os.path.realpath(os.path.abspath(p))


def _inside(child: str, parent: str) -> bool:
    return child == parent or os.path.commonpath([child, parent]) == parent


def check_not_input(out: str | Path, inputs=(), what: str = "output") -> None:
    """Refuse an output that is, or contains, one of ``inputs`` (files or folders read by this
    command), or the current folder; and one inside a folder input."""
    out = Path(out)
    ro = _real(out)
    if _inside(os.getcwd(), ro):
        raise UnsafeInput(f"{what} {out} is the current folder or holds it; choose another")
    for i in inputs:
        if i is None:
            continue
        ri = _real(i)
        if _inside(ri, ro):
            raise UnsafeInput(f"{what} {out} holds the input {i}; choose another")
        if os.path.isdir(ri) and _inside(ro, ri):
            raise UnsafeInput(f"{what} {out} is inside the input folder {i}; choose another")


def check_output_file(path: str | Path, inputs=(), what: str = "output") -> Path:
    """A file output may be written: it is not a symlink, not an input, and either absent, a
    regular file, or a character device (written through). A folder, FIFO or socket is refused."""
    path = Path(path)
    if path.is_symlink():
        target = _real(path)
        if os.path.exists(target) and stat.S_ISCHR(os.stat(target).st_mode):
            return path   # /dev/stdout and the like: written through
        raise UnsafeInput(f"{what} {path} is a symlink; nerfexport does not replace one (give its target)")
    if path.exists():
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeInput(f"{what} {path} is a folder")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise UnsafeInput(f"{what} {path} is not a regular file; nerfexport does not replace it")
    for i in inputs:
        if i is not None and os.path.exists(i) and os.path.exists(path) and os.path.samefile(i, path):
            raise UnsafeInput(f"{what} {path} is an input of this command; choose another")
    return path


def writes_through(path: str | Path) -> bool:
    """Whether ``path`` is a character device (or a symlink to one): written in place, not replaced."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def mark(folder: str | Path, kind: str) -> None:
    (Path(folder) / MARKER).write_text(f"{kind}\n")


def marked(folder: str | Path, kind: str) -> bool:
    p = Path(folder) / MARKER
    try:
        return p.is_file() and not p.is_symlink() and p.stat().st_size < 64 and p.read_text().strip() == kind
    except (OSError, UnicodeDecodeError):
        return False


def check_output_folder(out: str | Path, kind: str, inputs=(), force: bool = False, owned=None,
                        what: str = "output folder") -> Path:
    """A folder output may be replaced: absent, empty, or nerfexport's own earlier output of this
    ``kind`` (``owned(out)`` decides, default: the marker file) -- or anything but a symlink, a
    file or an input with ``force``. Raises :class:`UnsafeInput` (one sentence) otherwise."""
    out = Path(out)
    if not out.name or out.name in (".", ".."):
        out = Path(os.path.abspath(out))
    if out.is_symlink():
        raise UnsafeInput(f"{what} {out} is a symlink; nerfexport does not replace one (give its target)")
    check_not_input(out, inputs, what)
    if out.exists():
        if not out.is_dir():
            raise UnsafeInput(f"{what} {out} exists and is not a folder")
        owner = owned or (lambda p: marked(p, kind))
        try:
            empty = not any(out.iterdir())
        except OSError as e:
            raise UnsafeInput(f"{what} {out}: {e.strerror}") from None
        if not empty and not force and not owner(out):
            raise UnsafeInput(f"{what} {out} exists and holds files nerfexport did not write as {kind}; "
                              f"choose another or pass --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UnsafeInput(f"cannot write {out}: {parent} does not exist")
    return out


def swap_into_place(tmp: Path, out: Path) -> None:
    """Put the folder ``tmp`` at ``out``, keeping the earlier ``out`` until the new one is there:
    on any failure or signal between the two renames the earlier folder is put back."""
    old = None
    if out.is_symlink():
        raise UnsafeInput(f"{out} is a symlink; nerfexport does not replace one")
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
