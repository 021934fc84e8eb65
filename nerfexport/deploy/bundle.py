"""Bundles: a folder with one ONNX graph per network and a ``manifest.json`` that describes it.

Reading a bundle needs no torch. A bundle is untrusted input (users download and copy them), so
``open_bundle`` checks, before any network is loaded:

- the format version and every value the renderer uses (scene, camera, sample counts, grid);
- that every file the manifest names lies inside the bundle folder: a relative path without
  ``..``, not absolute, no symlink leading out (checked before a byte of it is read);
- every file's SHA-256 against the manifest, so a missing, truncated or tampered file is refused;
- that each ONNX file parses as a graph with the inputs and outputs a bundle network has, and
  that any external-data location it names stays inside the folder too.

Every refusal is a :class:`BundleError` with one sentence that names the file.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from nerfexport.data.fileio import OutsideFolder, confine, sha256  # sha256 re-exported: export and tensorrt hash files with it

FORMAT = "nerfexport-bundle"
VERSION = 1
MANIFEST = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
MAX_SIDE = 8192              # pixels per side of a camera the renderer accepts
MAX_PIXELS = 4096 * 4096     # pixels per image (a 200000^2 camera would need hundreds of GiB)
MAX_SAMPLES = 4096           # samples per ray, coarse or fine


class BundleError(ValueError):
    """The folder is not a usable bundle."""


def confined(root: str | Path, rel, what: str = "file") -> Path:
    """``root / rel`` for a path read from the manifest, refused with :class:`BundleError`
    unless it stays inside the bundle folder (:func:`nerfexport.data.fileio.confine`)."""
    try:
        return confine(root, rel, what)
    except OutsideFolder as e:
        raise BundleError(str(e).replace("the folder", "the bundle folder")) from None


def _num(x, name: str, where: str, lo: float | None = None, hi: float | None = None, integer: bool = False):
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    if ok and integer:
        ok = float(x).is_integer()
    if ok and lo is not None:
        ok = x >= lo
    if ok and hi is not None:
        ok = x <= hi
    if not ok:
        rng = "" if lo is None and hi is None else f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise BundleError(f"{where}: {name} must be a{'n integer' if integer else ' finite number'}{rng}, not {x!r}")
    return int(x) if integer else float(x)


def check_camera(H, W, focal, where: str = "camera") -> tuple[int, int, float]:
    """``(H, W, focal)`` checked: positive integer sizes of at most :data:`MAX_SIDE` pixels and
    :data:`MAX_PIXELS` in all, a positive focal length. Raises :class:`BundleError`."""
    H = _num(H, "the camera height", where, 1, MAX_SIDE, integer=True)
    W = _num(W, "the camera width", where, 1, MAX_SIDE, integer=True)
    if H * W > MAX_PIXELS:
        raise BundleError(f"{where}: a {W}x{H} camera has more than {MAX_PIXELS:,} pixels; refused")
    focal = _num(focal, "the focal length", where, 1e-6)
    return H, W, focal


def validate_manifest(m, where: str = MANIFEST) -> dict:
    """Check every manifest value the renderer, runtimes and bench use; returns ``m``. Raises
    :class:`BundleError` naming the first bad value."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{where} is not a nerfexport bundle manifest")
    v = m.get("version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise BundleError(f"{where} has no format version")
    if v > VERSION:
        raise BundleError(f"{where} is bundle format version {v}; this nerfexport reads up to {VERSION} (upgrade it)")
    for key in ("networks", "scene", "precision"):
        if key not in m:
            raise BundleError(f"{where} lacks '{key}'")
    if m["precision"] not in PRECISIONS:
        raise BundleError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, not {m['precision']!r}")
    s = m["scene"]
    if not isinstance(s, dict):
        raise BundleError(f"{where}: 'scene' must be a table")
    try:
        near, far = _num(s["near"], "scene.near", where, 0.0), _num(s["far"], "scene.far", where)
        if not far > near:
            raise BundleError(f"{where}: scene.far ({far}) must be greater than scene.near ({near})")
        _num(s["n_coarse"], "scene.n_coarse", where, 1, MAX_SAMPLES, integer=True)
        _num(s["n_fine"], "scene.n_fine", where, 0, MAX_SAMPLES, integer=True)
        for k in ("white_bkgd", "ndc"):
            if not isinstance(s[k], bool):
                raise BundleError(f"{where}: scene.{k} must be true or false, not {s[k]!r}")
    except KeyError as e:
        raise BundleError(f"{where}: scene lacks {e}") from None
    cam = s.get("camera")
    if cam:   # absent or empty for a model that never saw its training views (an import)
        if not isinstance(cam, dict):
            raise BundleError(f"{where}: scene.camera must be a table")
        try:
            check_camera(cam["H"], cam["W"], cam["focal"], f"{where}: scene.camera")
        except KeyError as e:
            raise BundleError(f"{where}: scene.camera lacks {e}") from None
    nets = m["networks"]
    if not isinstance(nets, dict) or not isinstance(nets.get("coarse"), dict):
        raise BundleError(f"{where}: 'networks' must name at least the coarse network")
    if set(nets) - {"coarse", "fine"}:
        raise BundleError(f"{where}: unknown network(s) {sorted(set(nets) - {'coarse', 'fine'})}")
    entries = [(f"network {w}", n) for w, n in nets.items() if n is not None]
    if nets.get("fine") is not None and not isinstance(nets["fine"], dict):
        raise BundleError(f"{where}: networks.fine must be a table or null")
    occ = m.get("occupancy")
    if occ:
        if not isinstance(occ, dict):
            raise BundleError(f"{where}: 'occupancy' must be a table")
        try:
            _num(occ["res"], "occupancy.res", where, 1, 1024, integer=True)
            box = occ["aabb"]
            if not (isinstance(box, list) and len(box) == 6):
                raise BundleError(f"{where}: occupancy.aabb must be 6 numbers")
            box = [_num(x, "occupancy.aabb", where) for x in box]
            if not all(box[i + 3] > box[i] for i in range(3)):
                raise BundleError(f"{where}: occupancy.aabb {box} is empty")
        except KeyError as e:
            raise BundleError(f"{where}: occupancy lacks {e}") from None
        if occ.get("outside", "empty") not in ("empty", "occupied"):
            raise BundleError(f"{where}: occupancy.outside must be 'empty' or 'occupied'")
        entries.append(("occupancy grid", occ))
    trt = m.get("tensorrt")
    if trt:
        engines = trt.get("engines") if isinstance(trt, dict) else None
        if not isinstance(engines, dict):
            raise BundleError(f"{where}: tensorrt.engines must be a table")
        entries += [(f"TensorRT engine {w}", e) for w, e in engines.items()]
    for what, e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            raise BundleError(f"{where}: the {what} has no file name")
        if not (isinstance(e.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", e["sha256"])):
            raise BundleError(f"{where}: the {what} has no SHA-256")
        if "bytes" in e:
            _num(e["bytes"], f"the {what}'s bytes", where, 0, integer=True)
    return m


def _files(m: dict) -> list[tuple[str, dict]]:
    files = [(f"network {w}", n) for w, n in m["networks"].items() if n]
    files += [(f"TensorRT engine {w}", e) for w, e in (((m.get("tensorrt") or {}).get("engines")) or {}).items()]
    if m.get("occupancy"):
        files.append(("occupancy grid", m["occupancy"]))
    return files


def _tensors(g):
    """Every tensor of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from g.initializer
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for sub in a.graphs:
                yield from _tensors(sub)


def check_onnx(path: Path, root: Path) -> None:
    """``path`` parses as an ONNX graph with a bundle network's inputs and outputs, and names no
    external data outside ``root``. Raises :class:`BundleError` naming the file."""
    try:
        import onnx
    except ImportError:   # the deploy side without onnx: onnxruntime's own loading checks the file
        return
    name = path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:   # protobuf's DecodeError and friends: not a graph
        raise BundleError(f"{root}: {name} is not an ONNX graph ({type(e).__name__})") from None
    g = model.graph
    if not len(g.node):
        raise BundleError(f"{root}: {name} is not an ONNX graph (no nodes)")
    for t in _tensors(g):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location")
            confined(root, loc, f"external data of {name}")
    ins, outs = {i.name for i in g.input}, {o.name for o in g.output}
    if "points" not in ins or not {"rgb", "density"} <= outs:
        raise BundleError(f"{root}: {name} is not a bundle network (inputs {sorted(ins)}, outputs {sorted(outs)}; "
                          "expected points, viewdirs -> rgb, density)")


@dataclass
class Bundle:
    root: Path
    manifest: dict

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    def network_path(self, which: str) -> Path | None:
        net = self.manifest["networks"].get(which)
        return None if net is None else confined(self.root, net["file"], f"network {which}")

    def engine_path(self, which: str) -> Path | None:
        eng = (self.manifest.get("tensorrt") or {}).get("engines", {}).get(which)
        return None if eng is None else confined(self.root, eng["file"], f"TensorRT engine {which}")

    def occupancy(self):
        """The bundle's :class:`nerfexport.export.grid.OccupancyBits`, or ``None`` when it has none."""
        occ = self.manifest.get("occupancy")
        if not occ:
            return None
        from nerfexport.export.grid import GridError, OccupancyBits
        path = confined(self.root, occ["file"], "occupancy grid")
        try:
            return OccupancyBits.load(path, int(occ["res"]), occ["aabb"],
                                      occ.get("outside", "empty") == "occupied")
        except (GridError, KeyError, TypeError, ValueError, OSError, EOFError) as e:
            raise BundleError(f"{self.root}: {occ['file']} is not a usable occupancy grid "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        except Exception as e:   # zipfile.BadZipFile, zlib.error: a damaged archive
            raise BundleError(f"{self.root}: {occ['file']} is not a usable occupancy grid ({type(e).__name__})") from None

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
        too_big = mpath.stat().st_size > 16 << 20
        m = None if too_big else json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({type(e).__name__})") from None
    if too_big:
        raise BundleError(f"{mpath} is larger than 16 MiB; not a bundle manifest")
    validate_manifest(m, str(mpath))
    for what, f in _files(m):
        p = confined(root, f["file"], what)   # before a byte of it is read
        if not p.is_file():
            raise BundleError(f"{root}: {f['file']} is missing")
        if verify and sha256(p) != f["sha256"]:
            raise BundleError(f"{root}: {f['file']} does not match the hash in the manifest (modified or damaged)")
    if verify:
        for w, n in m["networks"].items():
            if n:
                check_onnx(confined(root, n["file"]), root)
    return Bundle(root, m)
