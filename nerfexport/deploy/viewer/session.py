"""The bundles a viewer shows, and their frames: one render at a time per bundle, newest first.

Each bundle has a :class:`FrameQueue`. A request waits while the bundle renders; while it waits
a newer request from the same page (a larger ``seq`` with the same ``client``) makes it
*stale*: it is answered at once without rendering (the server sends HTTP 204). At most
``limit`` requests wait per bundle; more are refused as busy (HTTP 503).
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np

from nerfexport.data.datasets import DatasetError
from nerfexport.deploy.bundle import Bundle, open_bundle
from nerfexport.deploy.networks import make_networks, render_settings
from nerfexport.data.rays import pose_spherical
from nerfexport.deploy.render import Renderer, make_renderer
from nerfexport.deploy.run import early_stop_value, skip_note
from nerfexport.deploy.runtime import RuntimeSpec, RuntimeSpecError
from nerfexport.deploy.viewer.request import RADIUS_FACTOR, FrameRequest, Limits
from nerfexport.deploy.views import dataset_views, resize_camera

T = TypeVar("T")
QUEUE_LIMIT = 8      # requests waiting per bundle
CLIENTS = 256        # pages whose newest sequence number is remembered


class Stale(Exception):
    """A newer request from the same page superseded this one before it rendered."""


class Busy(Exception):
    """Too many requests wait for this bundle already."""


class FrameQueue:
    """One render at a time, at most ``limit`` waiting, and only the newest request of each
    client renders (older waiting ones raise :class:`Stale`)."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self.waiting = 0
        self._busy = False
        self._newest: OrderedDict[str, tuple[int, object]] = OrderedDict()   # client -> (seq, ticket)
        self._cond = threading.Condition()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """The render slot, held (waits for it): what a render does, and tests use to stall the queue."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _current(self, client: str, seq: int | None, ticket: object) -> bool:
        return seq is None or self._newest.get(client, (None, None))[1] is ticket

    def _enter(self, client: str, seq: int | None) -> None:
        with self._cond:
            if seq is not None and seq <= self._newest.get(client, (-1, None))[0]:
                raise Stale
            if self.waiting >= self.limit:
                raise Busy
            ticket = object()
            if seq is not None:   # without a sequence number a request is never stale
                self._newest[client] = (seq, ticket)
                self._newest.move_to_end(client)
                while len(self._newest) > CLIENTS:
                    self._newest.popitem(last=False)
                self._cond.notify_all()   # wake this client's older waiting request: it is stale now
            self.waiting += 1
            try:
                while self._busy and self._current(client, seq, ticket):
                    self._cond.wait()
            finally:
                self.waiting -= 1
            if not self._current(client, seq, ticket):
                raise Stale
            self._busy = True

    def run(self, client: str, seq: int | None, job: Callable[[], T]) -> T:
        """``job()`` once the slot is free, unless a newer request of ``client`` came first
        (``seq`` ``None``: a request that is never stale)."""
        self._enter(client, seq)
        try:
            return job()
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


@dataclass
class Frame:
    """A rendered frame: the PNG, the render's wall time, network evaluations, its size."""

    png: bytes
    ms: float
    evaluations: int
    W: int
    H: int


def orbit_of(c2w: np.ndarray) -> dict[str, float]:
    """The orbit camera ``{"az", "el", "r"}`` (degrees, degrees, distance) whose position is that
    of the camera-to-world ``c2w``: :func:`pose_spherical` ``(az, -el, r)`` looks from there at
    the origin."""
    t = np.asarray(c2w, np.float64)[:3, 3]
    r = float(np.linalg.norm(t))
    if not r > 0:
        return {"az": 0.0, "el": 30.0, "r": 1.0}
    return {"az": float(np.degrees(np.arctan2(t[0], t[1]))), "el": float(np.degrees(np.arcsin(t[2] / r))), "r": r}


@dataclass
class ViewedBundle:
    """An opened bundle with its renderers (with and without skipping, sharing the networks),
    camera and queue."""

    name: str
    bundle: Bundle
    runtime: str
    renderers: dict[bool, Renderer]
    H: int
    W: int
    focal: float
    note: str
    queue: FrameQueue

    @property
    def limits(self) -> Limits:
        return Limits(self.W, self.H, RADIUS_FACTOR * self.bundle.manifest.scene.far)

    def info(self) -> dict:
        """What the page shows about the bundle."""
        m = self.bundle.manifest
        return {"name": self.name, "precision": m.precision, "runtime": self.runtime,
                "size_mb": m.size_bytes() / 1e6, "W": self.W, "H": self.H, "grid": m.occupancy is not None,
                "samples": [m.scene.n_coarse, m.scene.n_fine], "skipping": self.note,
                "max_radius": self.limits.max_radius}

    def render(self, req: FrameRequest) -> Frame:
        """Render ``req`` now (the caller holds the queue) into a PNG."""
        from PIL import Image
        H, W, focal = resize_camera(self.H, self.W, self.focal, resolution=(req.w, req.h))
        r = self.renderers[req.skip]
        r.timings.reset()
        t0 = time.perf_counter()
        rgb = r.render_view(H, W, focal, pose_spherical(req.az, -req.el, req.r))["rgb"]
        ms = (time.perf_counter() - t0) * 1e3
        buf = io.BytesIO()
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG", compress_level=1)
        return Frame(buf.getvalue(), ms, r.timings.samples, W, H)


def open_viewed(path: str | Path, spec: RuntimeSpec, early_stop: float | None = None) -> ViewedBundle:
    """Open and check the bundle folder ``path`` and build its renderers on ``spec``."""
    path = Path(path)
    early_stop_value(early_stop)
    if spec.kind == "torch":
        raise RuntimeSpecError("the torch runtime renders a checkpoint (model.pt); the viewer shows bundles")
    b = open_bundle(path)
    s = b.manifest.scene
    if s.ndc:
        raise DatasetError(f"{path} is a forward-facing (NDC) scene; the viewer orbits 360-degree scenes "
                           "(use nerfexport render)")
    if s.camera is None:
        raise DatasetError(f"{path} records no camera; the viewer needs the bundle's image size and focal length")
    nets = make_networks(spec, bundle=b)
    grid = b.occupancy()
    settings = render_settings(spec, b.manifest)
    density = b.density() if spec.sampler == "density" else None   # the runtime file's sampler
    try:   # ... which needs a density grid the bundle may lack
        renderers = {k: make_renderer(spec, nets, settings, grid, k, early_stop, density) for k in (True, False)}
    except ValueError as e:
        raise RuntimeSpecError(str(e)) from None
    return ViewedBundle(path.resolve().name or str(path), b, spec.name, renderers, s.camera.H, s.camera.W,
                        s.camera.cam, skip_note(renderers[True], grid, True, path), FrameQueue())


def start_camera(v: ViewedBundle) -> tuple[dict[str, float], str]:
    """Where the orbit starts: the first held-out test view of the dataset the bundle records,
    else 30 degrees above the equator halfway between near and far (as ``--views spiral``)."""
    s = v.bundle.manifest.scene
    try:
        views = dataset_views(v.bundle.manifest.data, first=1, ndc=s.ndc, owner=str(v.bundle.root))
    except (DatasetError, OSError) as e:
        return ({"az": -180.0, "el": 30.0, "r": 0.5 * (s.near + s.far)},
                f"orbit view ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    return orbit_of(views.poses[0]), "held-out test view 0 of the recorded dataset"
