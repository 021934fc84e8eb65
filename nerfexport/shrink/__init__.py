"""Shrinking: calibration samples, neuron scoring, distillation, recipes, the shrink pipeline. Needs torch.

The public functions, each with its arguments, returns and tensor shapes documented where it is
defined (imported from here lazily, so that ``nerfexport.shrink.recipe`` stays torch-free):

- :func:`run_shrink` (``nerfexport shrink``: files to files) and :func:`shrink_spec` (its options);
- :func:`shrink_pipeline`: calibrate, shrink, evaluate, distil, evaluate: the one orchestration;
- :func:`shrink_model`, :func:`choose_method`, :func:`calibrate`, :func:`factorize`: its steps;
- :func:`draw_samples`: calibration points ``(N, 3)`` and directions ``(N, 3)`` along training rays;
- :func:`build_bank` and :func:`nerfexport.shrink.distill.distill`: the teacher's outputs on ``R`` rays, and
  the student trained on them;
- :class:`ShrinkSpec` (with :meth:`ShrinkSpec.targets`), :class:`EvalSpec`, :func:`resolve_device`.
"""

from __future__ import annotations

import importlib

_WHERE = {"run_shrink": "run", "shrink_spec": "run", "ShrinkError": "run",
          "shrink_pipeline": "pipeline", "shrink_model": "pipeline", "choose_method": "pipeline",
          "calibrate": "pipeline", "factorize": "pipeline", "ShrinkReport": "pipeline",
          "draw_samples": "calibration", "build_bank": "distill", "DistillConfig": "distill",
          "ShrinkSpec": "spec", "EvalSpec": "spec", "Targets": "spec", "resolve_device": "spec"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
