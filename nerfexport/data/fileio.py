"""Writing files whole or not at all (no torch: the render path may use this)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. Raises
    ``IsADirectoryError`` / ``FileNotFoundError`` / ``OSError`` for paths that cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder", str(path))
    from nerfexport.data.safety import check_output_file, writes_through
    check_output_file(path)   # never a symlink, FIFO or socket
    if writes_through(path):  # a character device (/dev/null, /dev/stdout): written in place, never replaced
        try:
            with open(path, "wb") as f:
                write(f)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from None
        return path
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(2, "does not exist" if not parent.exists() else "is not a folder", str(parent))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:   # name the file the user asked for, not the hidden temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class OutsideFolder(ValueError):
    """A path read from a file leads outside the folder that file belongs to."""


def confine(root: str | Path, rel, what: str = "file") -> Path:
    """``root / rel`` for a path ``rel`` read from a file that belongs to the folder ``root``,
    refused (:class:`OutsideFolder`, one sentence) unless it stays inside ``root``: a non-empty
    relative path with no ``..`` and no absolute part, that does not leave ``root`` through a
    symlink (of the file or of a folder on the way). Nothing is read; the file need not exist."""
    root = Path(root)
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise OutsideFolder(f"{root}: unusable {what} path {rel!r}")
    pp = PurePosixPath(rel)
    if pp.is_absolute() or re.match(r"^[A-Za-z]:", rel) or any(part == ".." for part in pp.parts):
        raise OutsideFolder(f"{root}: {what} {rel!r} is outside the folder (absolute paths and '..' are refused)")
    path = root.joinpath(*pp.parts)
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base or real == base:
        raise OutsideFolder(f"{root}: {what} {rel!r} leads outside the folder (through a symlink); refused")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process
        return True
    return True


def temp_dir_for(out: str | Path) -> Path:
    """A new hidden folder beside ``out`` (``.NAME.tmp-PID-XXXX``) to build ``out`` in before
    renaming it into place. Temporaries of ``out`` left by processes that no longer run (killed
    with SIGKILL, or a power cut) are removed first."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    clean_stale(out)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(out)) from None


def clean_stale(out: str | Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID-*`` and ``.NAME.old-PID`` beside ``out`` whose process is gone;
    returns what was removed. Only this naming scheme is touched."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    pat = re.compile(rf"^\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)(?:-.*)?$")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pat.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            if ".old-" in p.name and not out.exists():
                os.replace(p, out)   # killed between the two renames of a swap: the earlier output comes back
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
