"""One network factory for every runtime family, behind one small interface.

A *family* (:class:`Family`) is what one runtime ``kind`` renders and how it makes its networks:
it says whether it renders a bundle folder or a checkpoint file (``renders``), checks what
:func:`nerfexport.deploy.runtime.check_available` cannot (``check``) and opens a path into a
:class:`Source`: the scene settings, the camera and dataset it records, its grids, and a factory
for its ``{"coarse": net, "fine": net | None}`` networks. :data:`FAMILIES` holds the deploy
side's own: onnxruntime sessions (:mod:`nerfexport.deploy.ort_network`) and TensorRT engines
(:mod:`nerfexport.deploy.trt_network`) on bundles. The torch baseline on checkpoints is a family
of the train side (:data:`nerfexport.train.torch_runtime.TORCH`), handed in by a caller above
it: the deploy side never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Protocol

from nerfexport.deploy.ort_network import ort_networks
from nerfexport.deploy.render import SceneSettings
from nerfexport.deploy.runtime import (RuntimeSpec, RuntimeSpecError, RuntimeUnavailable, check_available,
                                       check_bundle)
from nerfexport.deploy.trt_network import trt_networks

Renders = Literal["bundle", "checkpoint"]


@dataclass
class Source:
    """A bundle or checkpoint opened for one runtime: what a render or a bench row needs of it.

    ``networks(n_fine)`` makes ``{"coarse": net, "fine": net | None}``, each net
    ``(points (N,3), viewdirs (N,3)) -> (rgb (N,3) | None, density (N,1))`` (``n_fine``: the fine
    samples per ray the renderer will take, the source's own when ``None``); ``occupancy()`` and
    ``density()`` load its grids (``None`` without); ``plain``: it renders every sample (no
    skipping, no early termination, as nerf-pytorch does)."""

    path: Path
    settings: SceneSettings
    camera: dict | None
    data: dict | None                                  # the dataset it records
    networks: Callable[[int | None], dict]
    occupancy: Callable[[], object] = lambda: None
    density: Callable[[], object] = lambda: None
    plain: bool = False
    warnings: list[str] = field(default_factory=list)
    precision: str = "fp32"
    size_bytes: int = 0
    architectures: dict = field(default_factory=dict)   # "coarse"/"fine" -> MLPConfig.to_dict() or None


class Family(Protocol):
    """The interface of a runtime family (see the module's docstring)."""

    renders: Renders

    def check(self, spec: RuntimeSpec) -> None:
        """Raise :class:`RuntimeUnavailable` in one line where ``spec`` cannot run here."""

    def open(self, spec: RuntimeSpec, path: Path) -> Source:
        """Read ``path`` (a bundle folder or a checkpoint) for ``spec``."""


def render_settings(spec: RuntimeSpec, manifest) -> SceneSettings:
    """The renderer's scene settings for a bundle's ``manifest`` on ``spec``: the bundle's bounds
    and sample counts, or the runtime file's ``samples`` when it names them."""
    s = SceneSettings.from_manifest(manifest)
    if spec.samples:
        s.n_coarse, s.n_fine = int(spec.samples[0]), int(spec.samples[1])
    return s


def bundle_networks(spec: RuntimeSpec, bundle, n_fine: int | None = None) -> dict:
    """The networks of ``bundle`` on an onnxruntime or TensorRT ``spec``, without checks."""
    if spec.kind == "tensorrt":
        return trt_networks(spec, bundle)
    return ort_networks(spec, bundle, n_fine)


INT8_ON_CUDA = ("onnxruntime's CUDA provider has no int8 kernels; this int8 bundle runs its quantized layers on the "
                "CPU or in float (use ort-trt or tensorrt for int8 on a GPU)")


class BundleFamily:
    """Bundles (``nerfexport export``) on onnxruntime or TensorRT."""

    renders: Renders = "bundle"

    def check(self, spec: RuntimeSpec) -> None:
        pass

    def open(self, spec: RuntimeSpec, path: Path) -> Source:
        from nerfexport.deploy.bundle import open_bundle
        b = open_bundle(path)
        check_bundle(spec, b)
        s = b.manifest.scene
        warn = [INT8_ON_CUDA] if b.precision == "int8" and spec.providers[:1] == ["CUDAExecutionProvider"] else []
        return Source(Path(path), render_settings(spec, b.manifest), None if s.camera is None else s.camera.to_dict(),
                      b.manifest.data, lambda n_fine=None: bundle_networks(spec, b, n_fine), b.occupancy, b.density,
                      False, warn, b.precision, b.size_bytes(),
                      {w: None if n is None else n.architecture for w, n in b.manifest.networks.items()})


FAMILIES: dict[str, Family] = {"onnxruntime": BundleFamily(), "tensorrt": BundleFamily()}


def family_for(spec: RuntimeSpec, path: Path, families: Mapping[str, Family] | None = None) -> Family:
    """The family of ``spec``'s kind in ``families`` (:data:`FAMILIES` by default), refused in one
    line (:class:`RuntimeSpecError`, :class:`RuntimeUnavailable`) where it has none here or
    renders another kind of ``path`` (a checkpoint is a file, a bundle a folder)."""
    fam = (FAMILIES if families is None else families).get(spec.kind)
    if fam is None:
        raise RuntimeUnavailable(f"runtime {spec.name} ({spec.kind}) renders on the train side "
                                 "(pip install 'nerfexport[train]'), not with the deploy side alone")
    given: Renders = "checkpoint" if Path(path).is_file() else "bundle"
    if fam.renders == given:
        return fam
    if given == "bundle":
        raise RuntimeSpecError(f"the {spec.kind} runtime renders a checkpoint (model.pt); give the checkpoint, "
                               "not a bundle")
    raise RuntimeSpecError(f"runtime {spec.name} renders a bundle folder (nerfexport export); {path} is not one")


def open_source(spec: RuntimeSpec, path: str | Path, families: Mapping[str, Family] | None = None) -> Source:
    """Refuse an impossible pairing of ``spec`` and ``path`` (:func:`family_for`), check once that
    ``spec`` can run here, and open ``path`` with its family."""
    fam = family_for(spec, Path(path), families)
    check_available(spec)
    fam.check(spec)
    return fam.open(spec, Path(path))


def make_networks(spec: RuntimeSpec, bundle=None, n_fine: int | None = None) -> dict:
    """``{"coarse": net, "fine": net | None}`` for a bundle on onnxruntime or TensorRT.

    Args:
        spec: the runtime (:func:`nerfexport.deploy.runtime.load_runtime`).
        bundle: an opened bundle (:func:`nerfexport.deploy.bundle.open_bundle`).
        n_fine: the fine samples per ray the renderer will take (the runtime file's, else the
            bundle's, when ``None``); with a fine network and ``n_fine > 0`` an onnxruntime
            coarse network computes its density alone.

    Returns:
        The networks, each ``(points (N,3), viewdirs (N,3)) -> (rgb (N,3) | None, density (N,1))``.
        A bundle the runtime cannot run is refused first (:func:`check_bundle`), then a runtime
        that cannot run here (:func:`check_available`); the torch baseline renders a checkpoint
        (:func:`open_source` with its family)."""
    if bundle is not None:
        check_bundle(spec, bundle)
    check_available(spec)
    if spec.kind == "torch":
        raise RuntimeSpecError("the torch runtime renders a checkpoint (model.pt), not a bundle")
    if bundle is None:
        raise RuntimeSpecError(f"runtime {spec.name} renders a bundle (nerfexport export), not a checkpoint")
    return bundle_networks(spec, bundle, n_fine)
