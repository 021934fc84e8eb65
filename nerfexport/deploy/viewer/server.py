"""The viewer's HTTP server (the standard library's ``ThreadingHTTPServer``).

Routes (GET only):

* ``/`` and ``/viewer.js``: the page, shipped in ``static/``;
* ``/api/info``: JSON: the bundles (name, precision, size, runtime, camera size, grid) and the
  starting orbit camera;
* ``/api/frame?...`` (see :mod:`nerfexport.deploy.viewer.request`): a PNG with the headers
  ``X-Seq``, ``X-Frame-Ms`` (the render's wall time), ``X-Evaluations`` (network evaluations
  of the frame) and ``X-Size`` (``WxH``).

Answers: 200; **204** for a stale request (a newer one of the same page superseded it before it
rendered; the page ignores it); 400 for a bad request, with a one-line reason; 403 for a
``Host`` header that is not the loopback name the server listens on (DNS rebinding); 404; 500
with one line when a render fails (the server keeps running); 503 when too many requests wait.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from nerfexport.deploy.runtime import load_runtime
from nerfexport.deploy.viewer.request import BadRequest, parse_frame
from nerfexport.deploy.viewer.session import Busy, Stale, ViewedBundle, open_viewed, start_camera

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7007
MAX_BUNDLES = 4
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8")}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]"}
EventFn = Callable[[dict], None]


class ViewerError(RuntimeError):
    """The viewer cannot start (bad arguments, the port is taken)."""


def is_local(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (reachable from this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def static_file(name: str) -> bytes:
    return resources.files("nerfexport.deploy.viewer").joinpath("static", name).read_bytes()


class Viewer:
    """The bundles shown side by side and where their shared orbit camera starts."""

    def __init__(self, bundles: list[ViewedBundle], start: dict[str, float], start_note: str) -> None:
        self.bundles, self.start, self.start_note = bundles, start, start_note
        self.frames = 0

    @classmethod
    def open(cls, paths: list[str | Path], runtime: str = "ort-cpu", early_stop: float | None = None) -> "Viewer":
        if not 1 <= len(paths) <= MAX_BUNDLES:
            raise ViewerError(f"the viewer shows 1 to {MAX_BUNDLES} bundles side by side, not {len(paths)}")
        spec = load_runtime(runtime)
        bundles = [open_viewed(p, spec, early_stop) for p in paths]
        start, note = start_camera(bundles[0])
        start["r"] = min(start["r"], min(b.limits.max_radius for b in bundles))
        return cls(bundles, start, note)

    def info(self) -> dict:
        return {"bundles": [b.info() for b in self.bundles], "start": self.start, "start_note": self.start_note}


class Handler(BaseHTTPRequestHandler):
    """GET routes of :mod:`nerfexport.deploy.viewer.server`."""

    server: "ViewerServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:   # the library prints nothing
        log.debug("%s " + format, self.address_string(), *args)

    def send(self, code: int, body: bytes = b"", ctype: str = "text/plain; charset=utf-8",
             headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def text(self, code: int, msg: str) -> None:
        self.send(code, (msg.splitlines()[0][:300] if msg else "").encode() + b"\n")

    def host_ok(self) -> bool:
        """A server on loopback answers only requests addressed to a loopback name (no DNS rebinding)."""
        if not self.server.local:
            return True
        host = self.headers.get("Host") or ""
        name = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
        return name.lower() in self.server.allowed_hosts

    def do_GET(self) -> None:
        try:
            self.route()
        except (BrokenPipeError, ConnectionResetError):   # the page went away
            pass

    def route(self) -> None:
        url = urlsplit(self.path)
        if not self.host_ok():
            return self.text(403, "this viewer answers requests for localhost only")
        if url.path in STATIC:
            name, ctype = STATIC[url.path]
            return self.send(200, static_file(name), ctype)
        if url.path == "/api/info":
            return self.send(200, json.dumps(self.server.viewer.info()).encode(), "application/json")
        if url.path == "/api/frame":
            return self.frame(url.query)
        self.text(404, f"no such page: {url.path[:100]}")

    def frame(self, query: str) -> None:
        viewer = self.server.viewer
        try:
            req = parse_frame(parse_qs(query, keep_blank_values=True, max_num_fields=32),
                              [b.limits for b in viewer.bundles])
        except (BadRequest, ValueError) as e:
            return self.text(400, str(e))
        b = viewer.bundles[req.bundle]
        try:
            f = b.queue.run(req.client, req.seq, lambda: b.render(req))
        except Stale:
            return self.send(204, headers={"X-Seq": str(req.seq), "X-Stale": "1"})
        except Busy:
            return self.send(503, b"busy: too many frames wait for this bundle\n", headers={"Retry-After": "1"})
        except Exception as e:   # a runtime failure: one line, and the server keeps serving
            log.warning("render failed: %s", e)
            return self.text(500, f"render failed: {type(e).__name__}: {str(e)[:200]}")
        viewer.frames += 1
        seq = "" if req.seq is None else str(req.seq)
        self.send(200, f.png, "image/png", {"X-Seq": seq, "X-Frame-Ms": f"{f.ms:.1f}",
                                            "X-Evaluations": str(f.evaluations), "X-Size": f"{f.W}x{f.H}"})


class ViewerServer(ThreadingHTTPServer):
    """A threading HTTP server holding a :class:`Viewer` (handler threads are daemons)."""

    daemon_threads = True

    def __init__(self, viewer: Viewer | None, host: str, port: int) -> None:
        self.viewer, self.local = viewer, is_local(host)
        bare = host.strip("[]").lower()   # the bound loopback address is a name the page may use too
        self.allowed_hosts = LOOPBACK_NAMES | {f"[{bare}]" if ":" in bare else bare}
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/"


def make_server(viewer: Viewer | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> ViewerServer:
    """A server for ``viewer`` (set ``.viewer`` before serving when ``None``) listening on
    ``host:port`` (``port`` 0: any free port), not yet serving."""
    if not 0 <= port <= 65535:
        raise ViewerError(f"--port must be in 0-65535, not {port}")
    try:
        return ViewerServer(viewer, host, port)
    except OSError as e:
        raise ViewerError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def serve(paths: list[str | Path], runtime: str = "ort-cpu", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          early_stop: float | None = None, progress: EventFn | None = None) -> int:
    """Open the bundle folders ``paths`` on ``runtime`` and serve the viewer on ``host:port``
    until Ctrl-C (or SIGTERM); returns the number of frames rendered. ``progress`` gets
    ``{"event": "warning" | "ready" | "stopped", ...}`` (``ready`` carries the ``url``)."""
    emit = progress or (lambda e: None)
    if not is_local(host):
        emit({"event": "warning", "text": f"listening on {host}, not only on this machine: anyone who can reach "
                                          "it can view the bundles and make this machine render"})
    httpd = make_server(None, host, port)   # a taken port is said before the bundles load
    try:
        httpd.viewer = viewer = Viewer.open(paths, runtime, early_stop)
    except BaseException:
        httpd.server_close()
        raise
    emit({"event": "ready", "url": httpd.url, "start": viewer.start_note,
          "bundles": [f"{b.name} ({b.bundle.precision}, {b.W}x{b.H}; {b.note})" for b in viewer.bundles]})
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        emit({"event": "stopped"})
    finally:
        httpd.server_close()
    return viewer.frames
