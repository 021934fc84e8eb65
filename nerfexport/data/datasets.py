"""Scene loaders: Blender synthetic (``transforms_*.json``) and LLFF (``poses_bounds.npy``).

Both return a :class:`Scene` of float32 RGB images in [0, 1] and camera-to-world poses in
the OpenGL convention, with the split indices and the scene's near/far bounds. Loading
needs numpy and Pillow only (no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from nerfexport.data.fileio import OutsideFolder, confine


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete or malformed."""


@dataclass
class Scene:
    images: np.ndarray                   # (N, H, W, 3) float32 in [0, 1]
    poses: np.ndarray                    # (N, 4, 4) float32 camera-to-world
    H: int
    W: int
    focal: float
    near: float
    far: float
    white_bkgd: bool
    ndc: bool
    splits: dict[str, np.ndarray] = field(default_factory=dict)  # name -> indices into images
    kind: str = "blender"
    source: str = ""
    load_args: dict = field(default_factory=dict)  # how load_scene was called (to load it again)
    pinhole: tuple | None = None         # (fx, fy, cx, cy) when not `focal` with the centre at (W/2, H/2)
    notes: list = field(default_factory=list)  # what the loader assumed (held-out views, moved cameras)

    @property
    def cam(self):
        """The camera for the ray generator: ``focal``, or ``(fx, fy, cx, cy)`` (see ``deploy.rays.pinhole``)."""
        return self.focal if self.pinhole is None else self.pinhole

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.splits[split]
        return self.images[idx], self.poses[idx]


def _area_downscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Exact area averaging by an integer ``factor`` of ``(H, W, C)``; crops a ragged edge."""
    if factor == 1:
        return img
    H, W = img.shape[0] // factor, img.shape[1] // factor
    if H < 1 or W < 1:
        raise DatasetError(f"downscale {factor} is larger than the {img.shape[1]}x{img.shape[0]} images")
    img = img[: H * factor, : W * factor]
    return img.reshape(H, factor, W, factor, -1).mean(axis=(1, 3))


_MODES_8 = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")   # 16-bit greyscale: read as 16 bits, never clipped to 8


def _open_image(path: Path):
    from nerfexport.data.safety import UnsafeInput, regular_file
    try:
        regular_file(path, "image")   # a FIFO or device would block or never end
    except UnsafeInput as e:
        raise DatasetError(f"missing image {path}" if "does not exist" in str(e) else str(e)) from None
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DatasetError(f"image {path} is too large to load ({e})") from None
    except OSError as e:
        raise DatasetError(f"unreadable image {path}: {e}") from None
    if im.mode not in _MODES_8 + _MODES_16:
        im.close()
        raise DatasetError(f"image {path} has pixel mode {im.mode}; nerfexport reads 8-bit L/RGB/RGBA/palette "
                           "and 16-bit greyscale images")
    return im


class ImageBudget:
    """The memory that decoding a dataset's images implies, summed from their headers before any
    is decoded (a 54 KB PNG may claim 49 Mpx): the stacked float32 RGB images at the downscale,
    plus the largest one being decoded."""

    def __init__(self, downscale: int = 1) -> None:
        self.downscale, self.kept, self.peak = downscale, 0, 0

    def add(self, path: Path) -> None:
        from nerfexport.data.safety import UnsafeInput, check_memory
        with _open_image(path) as im:
            w, h = im.size
        if w < 1 or h < 1:
            raise DatasetError(f"image {path} is empty ({w}x{h})")
        self.kept += (w // self.downscale) * (h // self.downscale) * 3 * 4
        self.peak = max(self.peak, w * h * 4 * 4 * 3)
        try:
            check_memory(self.kept + self.peak, f"the images of this dataset ({w}x{h} in {path.name})")
        except UnsafeInput as e:
            raise DatasetError(str(e)) from None


def _read_image(path: Path) -> np.ndarray:
    try:
        with _open_image(path) as im:
            if im.mode in _MODES_16:
                g = np.asarray(im, dtype=np.float32) / 65535.0
                return np.repeat(g[..., None], 3, axis=-1)
            im = im.convert("RGBA") if im.mode in ("RGBA", "LA", "P", "PA") else im.convert("RGB")
            return np.asarray(im, dtype=np.float32) / 255.0
    except Image.DecompressionBombError as e:
        raise DatasetError(f"image {path} is too large to load ({e})") from None
    except OSError as e:
        raise DatasetError(f"unreadable image {path}: {e}") from None


def _composite(img: np.ndarray, white_bkgd: bool) -> np.ndarray:
    if img.shape[-1] == 4:
        rgb, a = img[..., :3], img[..., 3:]
        return rgb * a + (1.0 - a) * (1.0 if white_bkgd else 0.0)
    return img[..., :3]


def _check_factor(downscale: int) -> int:
    if not isinstance(downscale, int) or downscale < 1:
        raise DatasetError(f"downscale must be a positive integer, got {downscale!r}")
    return downscale


def load_blender(root: str | Path, downscale: int = 1, white_bkgd: bool = True,
                 splits: tuple[str, ...] = ("train", "val", "test"), near: float = 2.0, far: float = 6.0,
                 test_every: int = 1) -> Scene:
    """Load a Blender-format scene; RGBA is composited onto white (or black) *before*
    area-averaging down by ``downscale`` (the same as averaging premultiplied colour).

    ``test_every`` keeps every n-th frame of the ``test`` split (the evaluation protocol uses 20).
    """
    root = Path(root)
    _check_factor(downscale)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    from nerfexport.data.safety import UnsafeInput, finite, load_json
    images, poses, split_idx = [], [], {}
    camera_angle_x = None
    budget = ImageBudget(downscale)
    for split in splits:
        meta_path = root / f"transforms_{split}.json"
        if not meta_path.is_file():
            raise DatasetError(f"{root} is not a Blender dataset: {meta_path.name} is missing")
        try:
            try:
                meta = load_json(meta_path, "the file")
                if not isinstance(meta, dict):
                    raise UnsafeInput("not a JSON object")
                angle = finite(meta.get("camera_angle_x"), "camera_angle_x", 0.0, float(np.pi),
                               lo_open=True, hi_open=True)
            except UnsafeInput as e:
                raise DatasetError(f"{meta_path} is malformed: {e}") from None
            frames = meta["frames"]
            if not isinstance(frames, list):
                raise TypeError("frames is not a list")
            if split == "test" and test_every > 1:
                frames = frames[::test_every]
            if not frames:
                raise DatasetError(f"{meta_path} lists no frames")
            start = len(images)
            for fr in frames:   # every header before any image is decoded
                try:
                    p = confine(root, str(fr["file_path"]), "image")
                except OutsideFolder as e:
                    raise DatasetError(f"{meta_path}: {e}") from None
                budget.add(p.with_suffix(".png") if p.suffix == "" else p)
            for fr in frames:
                pose = np.asarray(fr["transform_matrix"], dtype=np.float32)
                if pose.shape != (4, 4) or not np.isfinite(pose).all():
                    raise DatasetError(f"{meta_path}: a transform_matrix is not a finite 4x4 matrix")
                fp = str(fr["file_path"])
                try:
                    path = confine(root, fp, "image")
                except OutsideFolder as e:
                    raise DatasetError(f"{meta_path}: {e}") from None
                if path.suffix == "":
                    path = path.with_suffix(".png")
                img = _area_downscale(_composite(_read_image(path), white_bkgd), downscale)
                images.append(img.astype(np.float32))
                poses.append(pose)
        except DatasetError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{meta_path} is malformed: {type(e).__name__}: {e}") from None
        camera_angle_x = angle if camera_angle_x is None else camera_angle_x
        split_idx[split] = np.arange(start, len(images))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DatasetError(f"{root}: images differ in size {sorted(shapes)}")
    H, W = images[0].shape[:2]
    focal = 0.5 * W / np.tan(0.5 * camera_angle_x)
    return Scene(np.stack(images), np.stack(poses), H, W, float(focal), near, far, white_bkgd, False,
                 split_idx, "blender", str(root))


# ---------------------------------------------------------------- LLFF (nerf-pytorch load_llff_data)

def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _viewmatrix(z: np.ndarray, up: np.ndarray, pos: np.ndarray) -> np.ndarray:
    vec2 = _normalize(z)
    vec0 = _normalize(np.cross(up, vec2))
    vec1 = _normalize(np.cross(vec2, vec0))
    return np.stack([vec0, vec1, vec2, pos], 1)


def _poses_avg(poses: np.ndarray) -> np.ndarray:
    hwf = poses[0, :3, -1:]
    center = poses[:, :3, 3].mean(0)
    vec2 = _normalize(poses[:, :3, 2].sum(0))
    up = poses[:, :3, 1].sum(0)
    return np.concatenate([_viewmatrix(vec2, up, center), hwf], 1)


def _recenter_poses(poses: np.ndarray) -> np.ndarray:
    poses_ = poses.copy()
    bottom = np.reshape([0, 0, 0, 1.0], [1, 4])
    c2w = np.concatenate([_poses_avg(poses)[:3, :4], bottom], -2)
    bottom = np.tile(np.reshape(bottom, [1, 1, 4]), [poses.shape[0], 1, 1])
    poses4 = np.concatenate([poses[:, :3, :4], bottom], -2)
    poses4 = np.linalg.inv(c2w) @ poses4
    poses_[:, :3, :4] = poses4[:, :3, :4]
    return poses_


_IMG_EXT = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def load_llff(root: str | Path, factor: int = 8, ndc: bool = True, llffhold: int = 8,
              bd_factor: float = 0.75) -> Scene:
    """Load an LLFF forward-facing scene as nerf-pytorch does (rescale by ``bd_factor``,
    recenter the poses, hold out every ``llffhold``-th view for test).

    Images come from ``images_{factor}/`` when present, else ``images/`` downscaled here.
    With ``ndc`` the renderer samples ``t`` in [0, 1] in NDC space; otherwise near/far are
    ``0.9 * min(bounds)`` and ``max(bounds)``.
    """
    root = Path(root)
    _check_factor(factor)
    pb = root / "poses_bounds.npy"
    if not pb.is_file():
        raise DatasetError(f"{root} is not an LLFF dataset: poses_bounds.npy is missing")
    try:
        arr = np.load(pb, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatasetError(f"{pb} is malformed: {e}") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] < 1:
        raise DatasetError(f"{pb} must be an (N, 17) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise DatasetError(f"{pb} holds values that are not finite numbers (NaN or infinity)")
    if not (arr[:, -2] > 0).all() or not (arr[:, -1] > arr[:, -2]).all() or not (arr[:, 4] > 0).all():
        raise DatasetError(f"{pb}: every view needs 0 < near bound < far bound and a positive image height")
    poses = arr[:, :-2].reshape([-1, 3, 5]).astype(np.float64)
    bds = arr[:, -2:].astype(np.float64)
    sub = root / f"images_{factor}"
    scale_here = 1
    if not sub.is_dir():
        sub, scale_here = root / "images", factor
    if not sub.is_dir():
        raise DatasetError(f"{root}: neither images_{factor}/ nor images/ exists")
    files = sorted(p for p in sub.iterdir() if p.suffix in _IMG_EXT)
    if len(files) != len(poses):
        raise DatasetError(f"{sub} holds {len(files)} images but poses_bounds.npy has {len(poses)} poses")
    if len(files) < 2:
        raise DatasetError(f"{root}: an LLFF scene needs at least 2 views (one is held out for testing)")
    if not (arr[:, 2 * 5 + 4] > 0).all() or not (arr[:, 4] < 1e6).all():
        raise DatasetError(f"{pb}: every view needs a positive focal length and image height below 1e6")
    budget = ImageBudget(scale_here)
    for f in files:
        budget.add(f)
    imgs = np.stack([_area_downscale(_read_image(f)[..., :3], scale_here) for f in files]).astype(np.float32)
    H, W = imgs.shape[1:3]
    # hwf column: image size of this factor, focal scaled from the full-resolution one.
    full_h = poses[0, 0, 4]
    focal = float(poses[0, 2, 4] * H / full_h)
    # LLFF stores [down, right, backwards]; convert to [right, up, backwards].
    poses = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:]], 2)
    sc = 1.0 if bd_factor is None else 1.0 / (bds.min() * bd_factor)
    poses[:, :3, 3] *= sc
    bds = bds * sc
    poses = _recenter_poses(poses)
    c2w = np.tile(np.eye(4), (len(poses), 1, 1))
    c2w[:, :3, :4] = poses[:, :3, :4]
    n = len(poses)
    test = np.arange(n)[::llffhold] if llffhold > 0 else np.array([], dtype=int)
    train = np.array([i for i in range(n) if i not in set(test.tolist())])
    near, far = (0.0, 1.0) if ndc else (float(bds.min() * 0.9), float(bds.max()))
    if not (np.isfinite(c2w).all() and np.isfinite(focal) and focal > 0 and np.isfinite([near, far]).all()
            and far > near and len(train) > 0):
        raise DatasetError(f"{pb}: the poses and bounds give no usable cameras (degenerate poses, bounds or "
                           "focal length)")
    return Scene(imgs, c2w.astype(np.float32), H, W, focal, near, far, False, ndc,
                 {"train": train, "val": test, "test": test}, "llff", str(root))


def load_scene(root: str | Path, downscale: int = 1, white_bkgd: bool = True, test_every: int = 1,
               ndc: bool = True) -> Scene:
    """Detect the format of ``root`` and load it (``downscale`` is the LLFF factor for LLFF)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if not isinstance(test_every, int) or test_every < 1:
        raise DatasetError(f"test-every must be a positive integer, not {test_every!r}")
    args = {"path": str(root.resolve()), "downscale": downscale, "white": white_bkgd, "test_every": test_every,
            "ndc": ndc}
    if (root / "transforms_train.json").is_file():
        if all((root / f"transforms_{s}.json").is_file() for s in ("val", "test")):
            scene = load_blender(root, downscale, white_bkgd, test_every=test_every)
        else:
            from nerfexport.data.transforms import load_blender_partial
            scene = load_blender_partial(root, downscale, white_bkgd, test_every)
    elif (root / "transforms.json").is_file():
        from nerfexport.data.transforms import load_transforms
        scene = load_transforms(root, downscale, white_bkgd, test_every)
    elif (root / "poses_bounds.npy").is_file():
        scene = load_llff(root, factor=downscale, ndc=ndc)
    else:
        raise DatasetError(f"{root} is neither a Blender dataset (transforms_train.json), a nerfstudio / "
                           "instant-ngp one (transforms.json) nor an LLFF dataset (poses_bounds.npy)")
    scene.load_args = args
    return scene


@dataclass
class DataArgs:
    """Where the views come from and how they are loaded (``--data``, ``--downscale``,
    ``--white/--black``, ``--test-every``), passed whole. ``None`` is "not given": the value a
    checkpoint or bundle records (:func:`recorded_scene`), else :func:`load_scene`'s default."""

    path: str | Path | None = None   # None: the dataset a checkpoint or bundle records
    downscale: int | None = None     # None: the recorded one (the resolution the model was trained at), else 1
    white: bool | None = None        # None: the recorded background, else white
    test_every: int | None = None    # None: the recorded one, else 1
    ndc: bool = True                 # forward-facing (LLFF) scenes in NDC (:meth:`load`)

    def load(self) -> Scene:
        """The scene at ``path`` (which must be given), unset values at their defaults."""
        return load_scene(self.path, 1 if self.downscale is None else self.downscale,
                          True if self.white is None else self.white,
                          1 if self.test_every is None else self.test_every, self.ndc)


def recorded_scene(record: dict | None, data: DataArgs | None = None, ndc: bool = True,
                   owner: str = "the checkpoint") -> tuple[Scene, str | None]:
    """The dataset a command needs: ``data.path`` when given, else the one ``record``\\ed by a
    checkpoint or bundle (``{"path", "downscale", "white", "test_every"}``); the values ``data``
    gives override the recorded ones (``ndc``: the model's, not ``data.ndc``). Returns the scene
    and a note saying which folder was taken from the record (``None`` when ``data.path`` was given)."""
    rec = record if isinstance(record, dict) else {}
    data = data if data is not None else DataArgs()
    note, path = None, data.path
    if path is None:
        if not isinstance(rec.get("path"), str) or not rec["path"]:
            raise DatasetError(f"{owner} does not record its dataset; pass --data")
        path = Path(rec["path"])
        note = f"using the dataset recorded in {owner}: {path}"
    try:
        ds = int(data.downscale if data.downscale is not None else rec.get("downscale", 1))
        te = int(data.test_every if data.test_every is not None else rec.get("test_every", 1))
    except (TypeError, ValueError):
        raise DatasetError(f"{owner} records an unusable downscale or test_every") from None
    wh = bool(data.white if data.white is not None else rec.get("white", True))
    return load_scene(path, ds, wh, te, ndc), note
