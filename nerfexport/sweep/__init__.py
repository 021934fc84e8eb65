"""Sweeps: every combination of shrink method, width, fine-tune budget, precision, calibration,
runtime and skipping over several scenes, run as Ray tasks, cached per cell, in one table.

``spec`` reads and checks the sweep file, ``cells`` expands its axes into cells and the shared
stages they need, ``engine`` runs the stages on Ray, ``table`` writes the results, and
``run.run_sweep`` ties them together (what ``nerfexport sweep`` runs).

The public functions (imported from here lazily; each documents its arguments and returns):
:func:`load_sweep` (file -> :class:`SweepSpec`), :func:`plan` (spec -> cells and stages) and
:func:`run_sweep` (file -> the table, on Ray).
"""

from __future__ import annotations

import importlib

_WHERE = {"load_sweep": "spec", "SweepSpec": "spec", "SweepSpecError": "spec", "plan": "cells", "Plan": "cells",
          "run_sweep": "run", "SweepResult": "run", "SweepError": "run"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
