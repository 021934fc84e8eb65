"""The bundle manifest (``manifest.json``): its one owner.

:class:`Manifest` validates, reads and writes it; the exporter builds one, and the renderer,
runtimes, bench and CLI read its attributes. Nothing else parses ``manifest.json``.

A manifest is untrusted input: :meth:`Manifest.from_dict` checks every value the renderer,
runtimes and bench use (format and version, precision, scene, camera, sample counts, the
networks, the grid, TensorRT engines) and raises :class:`BundleError` naming the first bad one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from nerfexport.data.fileio import atomic_write

FORMAT = "nerfexport-bundle"
VERSION = 1
MANIFEST = "manifest.json"
BundlePrecision = Literal["fp32", "fp16", "int8"]   # what a bundle's networks compute in
PRECISIONS: tuple[str, ...] = get_args(BundlePrecision)
MAX_SIDE = 8192              # pixels per side of a camera the renderer accepts
MAX_PIXELS = 4096 * 4096     # pixels per image (a 200000^2 camera would need hundreds of GiB)
MAX_SAMPLES = 4096           # samples per ray, coarse or fine
MAX_BYTES = 16 << 20         # a manifest larger than this is not one


class BundleError(ValueError):
    """The folder is not a usable bundle (one sentence, naming the file or value)."""


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


def _table(d, name: str, where: str) -> dict:
    if not isinstance(d, dict):
        raise BundleError(f"{where}: {name} must be a table")
    return d


def check_camera(H, W, focal, where: str = "camera") -> tuple[int, int, float]:
    """``(H, W, focal)`` checked: positive integer sizes of at most :data:`MAX_SIDE` pixels and
    :data:`MAX_PIXELS` in all, a positive focal length. Raises :class:`BundleError`."""
    H = _num(H, "the camera height", where, 1, MAX_SIDE, integer=True)
    W = _num(W, "the camera width", where, 1, MAX_SIDE, integer=True)
    if H * W > MAX_PIXELS:
        raise BundleError(f"{where}: a {W}x{H} camera has more than {MAX_PIXELS:,} pixels; refused")
    return H, W, _num(focal, "the focal length", where, 1e-6)


@dataclass(frozen=True)
class Camera:
    """The training views' camera: ``H`` x ``W`` pixels, ``focal`` in pixels and, for a general
    pinhole (a nerfstudio capture), ``pinhole = (fx, fy, cx, cy)`` in the ray generator's pixel
    convention (``focal`` is then ``fx``). Written as ``{"H", "W", "focal"}`` plus ``"fx", "fy",
    "cx", "cy"`` when a pinhole: a bundle with only ``focal`` reads as before."""

    H: int
    W: int
    focal: float
    pinhole: tuple | None = None

    @property
    def cam(self):
        """``focal`` or ``(fx, fy, cx, cy)``: what the ray generator takes (``deploy.rays.pinhole``)."""
        return self.focal if self.pinhole is None else self.pinhole

    @classmethod
    def parse(cls, d, where: str = "camera") -> "Camera":
        """A camera record ``{"H", "W", "focal"[, "fx", "fy", "cx", "cy"]}``, every value checked."""
        d = _table(d, "the camera", where)
        try:
            H, W, focal = check_camera(d["H"], d["W"], d["focal"], where)
        except KeyError as e:
            raise BundleError(f"{where} lacks {e}") from None
        keys = ("fx", "fy", "cx", "cy")
        if not any(k in d for k in keys):
            return cls(H, W, focal)
        if not all(k in d for k in keys):
            raise BundleError(f"{where}: a pinhole camera needs all of fx, fy, cx, cy")
        fx = _num(d["fx"], "fx", where, 1e-6)
        fy = _num(d["fy"], "fy", where, 1e-6)
        cx = _num(d["cx"], "cx", where, -W, 2 * W)
        cy = _num(d["cy"], "cy", where, -H, 2 * H)
        return cls(H, W, fx, (fx, fy, cx, cy))

    def to_dict(self) -> dict:
        d = {"H": self.H, "W": self.W, "focal": self.focal}
        if self.pinhole is not None:
            d.update(zip(("fx", "fy", "cx", "cy"), self.pinhole))
        return d


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle: its path relative to the bundle folder, SHA-256 and size."""

    file: str
    sha256: str
    bytes: int = 0

    @classmethod
    def parse(cls, d, what: str, where: str) -> "FileEntry":
        if not isinstance(d, dict) or not isinstance(d.get("file"), str) or not d["file"]:
            raise BundleError(f"{where}: the {what} has no file name")
        if not (isinstance(d.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", d["sha256"])):
            raise BundleError(f"{where}: the {what} has no SHA-256")
        n = _num(d.get("bytes", 0), f"the {what}'s bytes", where, 0, integer=True)
        return cls(d["file"], d["sha256"], n)


@dataclass(frozen=True)
class Network(FileEntry):
    """One network's ONNX graph: ``points (N,3), viewdirs (N,3) -> rgb (N,3), density (N,1)``."""

    architecture: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, d, what: str, where: str) -> "Network":
        f = FileEntry.parse(d, what, where)
        arch = d.get("architecture") or {}
        if not isinstance(arch, dict):
            raise BundleError(f"{where}: the {what}'s architecture must be a table")
        return cls(f.file, f.sha256, f.bytes, arch)

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "architecture": self.architecture,
                "inputs": {"points": ["N", 3], "viewdirs": ["N", 3]}, "outputs": {"rgb": ["N", 3], "density": ["N", 1]}}


@dataclass(frozen=True)
class Grid(FileEntry):
    """The occupancy grid: ``res^3`` packed bits over ``aabb`` (xmin, ymin, zmin, xmax, ymax, zmax)."""

    res: int = 0
    aabb: tuple = ()
    fraction: float = 0.0
    outside: str = "empty"     # whether points outside the box are "empty" or "occupied"
    baked: dict = field(default_factory=dict)   # how it was baked (threshold, dilation, ...): informative

    @classmethod
    def parse(cls, d, what: str, where: str) -> "Grid":
        f = FileEntry.parse(d, what, where)
        try:
            res = _num(d["res"], "occupancy.res", where, 1, 1024, integer=True)
            box = d["aabb"]
        except KeyError as e:
            raise BundleError(f"{where}: occupancy lacks {e}") from None
        box = _aabb(box, "occupancy.aabb", where)
        outside = d.get("outside", "empty")
        if outside not in ("empty", "occupied"):
            raise BundleError(f"{where}: occupancy.outside must be 'empty' or 'occupied'")
        frac = _num(d.get("fraction", 0.0), "occupancy.fraction", where, 0.0, 1.0)
        baked = {k: v for k, v in d.items() if k not in ("file", "sha256", "bytes", "res", "aabb", "fraction", "outside")}
        return cls(f.file, f.sha256, f.bytes, res, box, frac, outside, baked)

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "res": self.res,
                "aabb": list(self.aabb), "fraction": self.fraction, "outside": self.outside, **self.baked}


def _aabb(box, name: str, where: str) -> tuple:
    """``box`` as 6 finite numbers ``(xmin, ymin, zmin, xmax, ymax, zmax)`` enclosing some volume;
    raises :class:`BundleError` naming ``name``."""
    if not (isinstance(box, list) and len(box) == 6):
        raise BundleError(f"{where}: {name} must be 6 numbers")
    box = tuple(_num(x, name, where, -1e6, 1e6) for x in box)
    if not all(box[i + 3] > box[i] for i in range(3)):
        raise BundleError(f"{where}: {name} {list(box)} is empty")
    return box


@dataclass(frozen=True)
class Density(FileEntry):
    """The baked density grid (optional, issue 34): densities at the ``(res+1)^3`` cell corners of
    ``aabb`` as uint8 codes, ``density = expm1(code * scale)``; the renderer's density sampler
    places the fine samples from it. A bundle without it renders with the coarse network."""

    res: int = 0
    aabb: tuple = ()
    scale: float = 1.0
    encoding: str = "log1p-u8"

    @classmethod
    def parse(cls, d, what: str, where: str) -> "Density":
        f = FileEntry.parse(d, what, where)
        try:
            res = _num(d["res"], "density.res", where, 1, 512, integer=True)
            box, scale = d["aabb"], _num(d["scale"], "density.scale", where, 1e-9, 1.0)
        except KeyError as e:
            raise BundleError(f"{where}: density lacks {e}") from None
        box = _aabb(box, "density.aabb", where)
        enc = d.get("encoding", "log1p-u8")
        if enc != "log1p-u8":
            raise BundleError(f"{where}: density.encoding {enc!r} is unknown (this nerfexport reads log1p-u8)")
        return cls(f.file, f.sha256, f.bytes, res, box, scale, enc)

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "res": self.res,
                "aabb": list(self.aabb), "scale": self.scale, "encoding": self.encoding}


@dataclass(frozen=True)
class Scene:
    """What the renderer needs besides the networks."""

    near: float
    far: float
    white_bkgd: bool
    ndc: bool
    n_coarse: int
    n_fine: int
    camera: Camera | None = None

    @classmethod
    def parse(cls, s, where: str) -> "Scene":
        s = _table(s, "'scene'", where)
        try:
            near, far = _num(s["near"], "scene.near", where, 0.0), _num(s["far"], "scene.far", where)
            if not far > near:
                raise BundleError(f"{where}: scene.far ({far}) must be greater than scene.near ({near})")
            nc = _num(s["n_coarse"], "scene.n_coarse", where, 1, MAX_SAMPLES, integer=True)
            nf = _num(s["n_fine"], "scene.n_fine", where, 0, MAX_SAMPLES, integer=True)
            if nf > 0 and nc < 3:
                raise BundleError(f"{where}: fine samples need at least 3 coarse samples per ray, not {nc}")
            for k in ("white_bkgd", "ndc"):
                if not isinstance(s[k], bool):
                    raise BundleError(f"{where}: scene.{k} must be true or false, not {s[k]!r}")
        except KeyError as e:
            raise BundleError(f"{where}: scene lacks {e}") from None
        cam = s.get("camera")
        camera = None
        if cam:   # absent or empty for a model that never saw its training views (an import)
            camera = Camera.parse(cam, f"{where}: scene.camera")
        return cls(near, far, s["white_bkgd"], s["ndc"], nc, nf, camera)

    def to_dict(self) -> dict:
        cam = {} if self.camera is None else self.camera.to_dict()
        return {"near": self.near, "far": self.far, "white_bkgd": self.white_bkgd, "ndc": self.ndc,
                "n_coarse": self.n_coarse, "n_fine": self.n_fine, "camera": cam}


@dataclass
class Manifest:
    """A bundle's ``manifest.json``. ``networks["fine"]`` is ``None`` for a coarse-only model;
    ``occupancy`` is ``None`` without a grid; ``tensorrt`` holds the engines' entries and the
    optimization profile when built. ``calibration`` (int8), ``quantization_check``, ``data``
    (where the training and test views came from) and ``source`` are informative records."""

    precision: BundlePrecision
    scene: Scene
    networks: dict[str, Network | None]
    occupancy: Grid | None = None
    tensorrt: dict | None = None
    engines: dict[str, FileEntry] = field(default_factory=dict)
    calibration: dict | None = None
    quantization_check: dict | None = None
    data: dict | None = None
    source: dict = field(default_factory=dict)
    opset: int | None = None
    created_by: str = ""
    export_seconds: float | None = None
    version: int = VERSION
    density: Density | None = None   # optional (additive in version 1): the baked density grid

    @property
    def activation_format(self) -> str | None:
        """``"U8S8"`` (``--target cpu``) or ``"S8S8"`` (``--target tensorrt``) for an int8 bundle
        whose calibration record says; ``None`` otherwise."""
        cal = self.calibration or {}
        if self.precision != "int8":
            return None
        if isinstance(cal.get("format"), str) and cal["format"].split()[-1] in ("U8S8", "S8S8"):
            return cal["format"].split()[-1]
        if cal.get("target") in ("cpu", "tensorrt"):
            return "U8S8" if cal["target"] == "cpu" else "S8S8"
        return None

    def files(self) -> list[tuple[str, FileEntry]]:
        """``(what, entry)`` for every file the manifest names."""
        out = [(f"network {w}", n) for w, n in self.networks.items() if n is not None]
        out += [(f"TensorRT engine {w}", e) for w, e in self.engines.items()]
        if self.occupancy is not None:
            out.append(("occupancy grid", self.occupancy))
        if self.density is not None:
            out.append(("density grid", self.density))
        return out

    def size_bytes(self) -> int:
        """Bytes of the ONNX graphs, the occupancy grid and the density grid (what a device stores to run
        it on onnxruntime)."""
        return (sum(n.bytes for n in self.networks.values() if n) + (self.occupancy.bytes if self.occupancy else 0)
                + (self.density.bytes if self.density else 0))

    @classmethod
    def from_dict(cls, m, where: str = MANIFEST) -> "Manifest":
        """Validate a parsed ``manifest.json``. Raises :class:`BundleError`."""
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
        nets = _table(m["networks"], "'networks'", where)
        if set(nets) - {"coarse", "fine"}:
            raise BundleError(f"{where}: unknown network(s) {sorted(set(nets) - {'coarse', 'fine'})}")
        if nets.get("coarse") is None:
            raise BundleError(f"{where}: 'networks' must name at least the coarse network")
        networks = {w: None if nets.get(w) is None else Network.parse(nets[w], f"network {w}", where)
                    for w in ("coarse", "fine")}
        occ = Grid.parse(m["occupancy"], "occupancy grid", where) if m.get("occupancy") else None
        dens = Density.parse(m["density"], "density grid", where) if m.get("density") else None
        trt, engines = m.get("tensorrt") or None, {}
        if trt is not None:
            trt = _table(trt, "'tensorrt'", where)
            eng = _table(trt.get("engines"), "tensorrt.engines", where)
            engines = {w: FileEntry.parse(e, f"TensorRT engine {w}", where) for w, e in eng.items()}
        opt = {}
        for k in ("calibration", "quantization_check", "data", "source"):
            if m.get(k) is not None:
                opt[k] = _table(m[k], f"'{k}'", where)
        return cls(precision=m["precision"], scene=Scene.parse(m["scene"], where), networks=networks,
                   occupancy=occ, tensorrt=trt, engines=engines, opset=m.get("opset"),
                   created_by=str(m.get("created_by", "")), export_seconds=m.get("export_seconds"), version=v,
                   density=dens, **opt)

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "version": self.version, "created_by": self.created_by, "precision": self.precision,
             "opset": self.opset, "scene": self.scene.to_dict(),
             "networks": {w: None if n is None else n.to_dict() for w, n in self.networks.items()},
             "source": self.source}
        for k in ("calibration", "quantization_check", "data", "export_seconds"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.occupancy is not None:
            d["occupancy"] = self.occupancy.to_dict()
        if self.density is not None:
            d["density"] = self.density.to_dict()
        if self.tensorrt is not None:
            d["tensorrt"] = {**self.tensorrt, "engines": {w: {"file": e.file, "sha256": e.sha256, "bytes": e.bytes}
                                                          for w, e in self.engines.items()}}
        return d

    @classmethod
    def read(cls, root: str | Path) -> "Manifest":
        """Read and validate ``root/manifest.json``. Raises :class:`BundleError`."""
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise BundleError(f"{root} is not a bundle (no {MANIFEST})")
        try:
            too_big = path.stat().st_size > MAX_BYTES
            m = None if too_big else json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise BundleError(f"{path} is not valid JSON ({type(e).__name__})") from None
        if too_big:
            raise BundleError(f"{path} is larger than {MAX_BYTES >> 20} MiB; not a bundle manifest")
        return cls.from_dict(m, str(path))

    def write(self, root: str | Path) -> Path:
        """Write ``root/manifest.json`` atomically."""
        text = json.dumps(self.to_dict(), indent=1).encode()
        return atomic_write(Path(root) / MANIFEST, lambda f: f.write(text))


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` holds a manifest that says it is a nerfexport bundle (not validated)."""
    p = Path(path) / MANIFEST
    try:
        return p.is_file() and p.stat().st_size <= MAX_BYTES and json.loads(p.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False
