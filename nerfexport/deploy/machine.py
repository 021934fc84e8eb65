"""This machine's CPU, read once from ``/proc/cpuinfo``: its name (:func:`machine`, what the bench,
studies and sweeps record) and its feature flags (what ``doctor`` and the bf16 choice read)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cpu:
    """``model``: the CPU's name (``model name``; ``platform.processor()`` or the architecture
    without one); ``family``, ``model_number``: x86's ``cpu family`` and ``model`` (``None``
    elsewhere); ``flags``: the first processor's ``flags`` (x86) or ``Features`` (Arm), ``None``
    where ``/proc/cpuinfo`` cannot be read."""

    model: str
    family: str | None = None
    model_number: str | None = None
    flags: frozenset[str] | None = None


def cpu() -> Cpu:
    """The first processor's block of ``/proc/cpuinfo`` (see :class:`Cpu`)."""
    generic = (platform.processor(), platform.machine())
    name, fields, flags = platform.processor() or platform.machine(), {}, None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return Cpu(name)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name in ("",) + generic:
            name = value.strip()
        elif key in ("cpu family", "model") and key not in fields:
            fields[key] = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = frozenset(value.split())
        elif not key:
            break
    return Cpu(name, fields.get("cpu family"), fields.get("model"), flags)


def machine() -> str:
    """The CPU by name, with its family and model (a VM's name is often generic), and its cores,
    e.g. ``"Intel(R) Xeon(R) ... (family 6 model 106), 16 cores"``."""
    c = cpu()
    name = c.model
    if c.family is not None and c.model_number is not None:
        name += f" (family {c.family} model {c.model_number})"
    return f"{name}, {os.cpu_count()} cores"
