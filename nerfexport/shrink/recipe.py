"""Compression recipes: TOML files with a ``[shrink]`` and an ``[export]`` table.

A recipe is found by path, or by name among the recipes shipped in ``recipes/`` (installed as
``nerfexport.recipes``). Unknown tables or keys are errors, so that a typo never silently
falls back to a default::

    description = "coreset to width 128, distilled"
    [shrink]
    method = "coreset"
    width = 128
    finetune = 500
    [export]
    int8 = true
    calibration = "minmax"
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHRINK_KEYS = {"method": str, "width": int, "ratio": float, "widths": list, "feature_width": int,
               "view_width": int, "finetune": int, "calib_rays": int, "seed": int, "fold": bool}
EXPORT_KEYS = {"fp16": bool, "int8": bool, "calibration": str, "calib_rays": int, "max_psnr_drop": float,
               "tensorrt": bool, "activations": str, "per_channel": bool}
TOP_KEYS = {"description": str, "shrink": dict, "export": dict}


class RecipeError(ValueError):
    """The recipe cannot be used."""


@dataclass
class Recipe:
    path: str
    description: str = ""
    shrink: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)


def builtin_recipes() -> dict[str, Path]:
    """Name -> path of the recipes shipped with nerfexport."""
    root = resources.files("nerfexport.recipes")
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".toml")}


def _check(table: dict, schema: dict, where: str, path) -> dict:
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {', '.join(unknown)} in {where} "
                          f"(known: {', '.join(sorted(schema))})")
    for k, v in table.items():
        want = schema[k]
        ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            raise RecipeError(f"{path}: {where}.{k} must be {want.__name__}, got {v!r}")
    return dict(table)


def load_recipe(ref: str | Path) -> Recipe:
    """Read a recipe from a path, or by the name of a shipped recipe (``coreset-w128``)."""
    path = Path(ref)
    if not path.is_file():
        shipped = builtin_recipes()
        name = Path(str(ref)).stem if str(ref).endswith(".toml") else str(ref)
        if name in shipped and not path.exists():
            path = shipped[name]
        else:
            raise RecipeError(f"recipe {ref} not found (shipped: {', '.join(sorted(shipped)) or 'none'})")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path} is not valid TOML ({e})") from None
    _check(doc, TOP_KEYS, "the top level", path)
    shrink = _check(doc.get("shrink", {}), SHRINK_KEYS, "[shrink]", path)
    export = _check(doc.get("export", {}), EXPORT_KEYS, "[export]", path)
    if "widths" in shrink and not all(isinstance(w, int) and not isinstance(w, bool) for w in shrink["widths"]):
        raise RecipeError(f"{path}: [shrink].widths must be a list of integers")
    return Recipe(str(path), doc.get("description", ""), shrink, export)
