"""Bundles: a folder with one ONNX graph per network and a ``manifest.json`` that describes it.

Reading a bundle needs no torch. ``open_bundle`` checks the format version and every file's
SHA-256 against the manifest, so a missing, truncated or tampered file is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .fileio import sha256  # noqa: F401  (re-exported: export and tensorrt hash files with it)

FORMAT = "nerfexport-bundle"
VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """The folder is not a usable bundle."""


@dataclass
class Bundle:
    root: Path
    manifest: dict

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    def network_path(self, which: str) -> Path | None:
        net = self.manifest["networks"].get(which)
        return None if net is None else self.root / net["file"]

    def engine_path(self, which: str) -> Path | None:
        eng = (self.manifest.get("tensorrt") or {}).get("engines", {}).get(which)
        return None if eng is None else self.root / eng["file"]

    def occupancy(self):
        """The bundle's :class:`nerfexport.grid.OccupancyBits`, or ``None`` when it has none."""
        occ = self.manifest.get("occupancy")
        if not occ:
            return None
        from .grid import GridError, OccupancyBits
        try:
            return OccupancyBits.load(self.root / occ["file"], int(occ["res"]), occ["aabb"],
                                      occ.get("outside", "empty") == "occupied")
        except (GridError, KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{self.root}: unusable occupancy grid ({e})") from None

    def size_bytes(self) -> int:
        """Bytes of the ONNX graphs and the occupancy grid (what a device must store to run the
        bundle with onnxruntime)."""
        occ = self.manifest.get("occupancy") or {}
        return sum(int(n["bytes"]) for n in self.manifest["networks"].values() if n) + int(occ.get("bytes", 0))


def is_bundle(path: str | Path) -> bool:
    p = Path(path) / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle. Raises :class:`BundleError` with one clear sentence."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist" if not root.exists() else f"{root} is not a bundle folder")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root} is not a bundle (no {MANIFEST})")
    try:
        m = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not a nerfexport bundle manifest")
    v = m.get("version")
    if not isinstance(v, int):
        raise BundleError(f"{mpath} has no format version")
    if v > VERSION:
        raise BundleError(f"{root} is bundle format version {v}; this nerfexport reads up to {VERSION} (upgrade it)")
    for key in ("networks", "scene", "precision"):
        if key not in m:
            raise BundleError(f"{mpath} lacks '{key}'")
    if verify:
        files = [n for n in m["networks"].values() if n]
        files += list(((m.get("tensorrt") or {}).get("engines") or {}).values())
        if m.get("occupancy"):
            files.append(m["occupancy"])
        for f in files:
            p = root / f["file"]
            if not p.is_file():
                raise BundleError(f"{root}: {f['file']} is missing")
            if sha256(p) != f["sha256"]:
                raise BundleError(f"{root}: {f['file']} does not match the hash in the manifest (modified or damaged)")
    return Bundle(root, m)
