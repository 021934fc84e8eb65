"""Bundles: a folder with one ONNX graph per network and a ``manifest.json`` that describes it.

Reading a bundle needs no torch. A bundle is untrusted input (users download and copy them), so
``open_bundle`` checks, before any network is loaded:

- the manifest (:class:`nerfexport.deploy.manifest.Manifest`: format version and every value
  the renderer uses: scene, camera, sample counts, grid);
- that every file the manifest names lies inside the bundle folder: a relative path without
  ``..``, not absolute, no symlink leading out (checked before a byte of it is read);
- every file's SHA-256 against the manifest, so a missing, truncated or tampered file is refused;
- that each ONNX file parses as a graph with the inputs and outputs a bundle network has, and
  that any external-data location it names stays inside the folder too.

Every refusal is a :class:`BundleError` with one sentence that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nerfexport.data.fileio import OutsideFolder, confine, sha256
from nerfexport.deploy.manifest import BundleError, Manifest


def confined(root: str | Path, rel, what: str = "file") -> Path:
    """``root / rel`` for a path read from the manifest, refused with :class:`BundleError`
    unless it stays inside the bundle folder (:func:`nerfexport.data.fileio.confine`)."""
    try:
        return confine(root, rel, what)
    except OutsideFolder as e:
        raise BundleError(str(e).replace("the folder", "the bundle folder")) from None


def _tensors(g):
    """Every tensor of an ONNX graph: initializers (sparse ones too) and node attributes, with
    subgraphs."""
    yield from g.initializer
    for sp in g.sparse_initializer:
        yield sp.values
        yield sp.indices
    for n in g.node:
        yield from _node_tensors(n)


def _node_tensors(n):
    for a in n.attribute:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
            yield sp.values
            yield sp.indices
        if a.HasField("g"):
            yield from _tensors(a.g)
        for sub in a.graphs:
            yield from _tensors(sub)


def check_onnx(path: Path, root: Path) -> None:
    """``path`` parses as an ONNX graph with a bundle network's inputs and outputs, and names no
    external data outside ``root``. Raises :class:`BundleError` naming the file."""
    import onnx
    name = path.name
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:   # protobuf's DecodeError and friends: not a graph
        raise BundleError(f"{root}: {name} is not an ONNX graph ({type(e).__name__})") from None
    g = model.graph
    if not len(g.node):
        raise BundleError(f"{root}: {name} is not an ONNX graph (no nodes)")
    tensors = list(_tensors(g)) + [t for f in model.functions for n in f.node for t in _node_tensors(n)]
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location")
            confined(root, loc, f"external data of {name}")
            # inside the folder, but no hash covers it: nerfexport's graphs carry their weights inline
            raise BundleError(f"{root}: {name} keeps tensor {t.name!r} in an external file {loc!r} that the "
                              "manifest does not hash; refused")
    ins, outs = {i.name for i in g.input}, {o.name for o in g.output}
    if "points" not in ins or not {"rgb", "density"} <= outs:
        raise BundleError(f"{root}: {name} is not a bundle network (inputs {sorted(ins)}, outputs {sorted(outs)}; "
                          "expected points, viewdirs -> rgb, density)")


@dataclass
class Bundle:
    """An opened, checked bundle: its folder and its :class:`Manifest`."""

    root: Path
    manifest: Manifest
    _density: object = field(default=None, init=False, repr=False, compare=False)   # density(), once read

    @property
    def precision(self) -> str:
        return self.manifest.precision

    def network_path(self, which: str) -> Path | None:
        net = self.manifest.networks.get(which)
        return None if net is None else confined(self.root, net.file, f"network {which}")

    def engine_path(self, which: str) -> Path | None:
        eng = self.manifest.engines.get(which)
        return None if eng is None else confined(self.root, eng.file, f"TensorRT engine {which}")

    def occupancy(self):
        """The bundle's :class:`nerfexport.deploy.occupancy.OccupancyBits`, or ``None`` when it has none."""
        occ = self.manifest.occupancy
        if occ is None:
            return None
        from nerfexport.deploy.occupancy import GridError, OccupancyBits
        path = confined(self.root, occ.file, "occupancy grid")
        try:
            return OccupancyBits.load(path, occ.res, occ.aabb, occ.outside == "occupied")
        except (GridError, TypeError, ValueError, OSError, EOFError) as e:
            raise BundleError(f"{self.root}: {occ.file} is not a usable occupancy grid "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        except Exception as e:   # zipfile.BadZipFile, zlib.error: a damaged archive
            raise BundleError(f"{self.root}: {occ.file} is not a usable occupancy grid ({type(e).__name__})") from None

    def density(self):
        """The bundle's baked :class:`nerfexport.deploy.density.DensityGrid`, or ``None`` when it
        has none (bundles before issue 34); read from the file once, then kept."""
        den = self.manifest.density
        if den is None:
            return None
        if self._density is None:
            self._density = self._load_density(den)
        return self._density

    def _load_density(self, den):
        from nerfexport.deploy.density import load_density
        path = confined(self.root, den.file, "density grid")
        try:
            return load_density(path, den.res, den.aabb, den.scale)
        except (TypeError, ValueError, OSError, EOFError) as e:
            raise BundleError(f"{self.root}: {den.file} is not a usable density grid "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        except Exception as e:   # zipfile.BadZipFile, zlib.error: a damaged archive
            raise BundleError(f"{self.root}: {den.file} is not a usable density grid ({type(e).__name__})") from None

    @property
    def u8s8(self) -> bool:
        """Whether this is an int8 bundle with uint8 activations (U8S8, ``--target cpu``), which
        TensorRT cannot run: from the manifest's calibration record, else (a bundle without one)
        from the coarse graph's zero points (needs onnx; without it, assumed not)."""
        if self.precision != "int8":
            return False
        fmt = self.manifest.activation_format
        if fmt is not None:
            return fmt == "U8S8"
        try:
            import onnx
        except ImportError:
            return False
        return any(t.name.endswith("_zero_point") and t.data_type == onnx.TensorProto.UINT8
                   for t in onnx.load(str(self.network_path("coarse"))).graph.initializer)

    def size_bytes(self) -> int:
        """Bytes of the ONNX graphs and the occupancy grid (what a device must store to run the
        bundle with onnxruntime)."""
        return self.manifest.size_bytes()


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle folder (``nerfexport export``).

    Args:
        path: the bundle folder (``manifest.json`` and the files it lists).
        verify: check each listed file's size and sha256 against the manifest.

    Returns:
        The :class:`Bundle`: its manifest, network paths and grids. Raises :class:`BundleError`
        with one clear sentence.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist" if not root.exists() else f"{root} is not a bundle folder")
    m = Manifest.read(root)
    for what, f in m.files():
        p = confined(root, f.file, what)   # before a byte of it is read
        if not p.is_file():
            raise BundleError(f"{root}: {f.file} is missing")
        if verify and sha256(p) != f.sha256:
            raise BundleError(f"{root}: {f.file} does not match the hash in the manifest (modified or damaged)")
    if verify:
        for w, n in m.networks.items():
            if n is not None:
                check_onnx(confined(root, n.file), root)
    return Bundle(root, m)
