"""What a browser may ask the viewer for, checked before anything renders.

A frame request is a query string: ``bundle`` (its index), the orbit camera ``az`` (azimuth,
degrees), ``el`` (elevation above the equator, degrees) and ``r`` (distance from the scene's
centre), the image size ``w`` and ``h`` (at most the bundle camera's), ``skip`` (``1``/``0``:
empty-space skipping and early termination), and for stale-request dropping ``seq`` (a number
that grows with every request of a page; without it a request is never stale) and ``client``
(the page's id). Anything else, a repeated or missing parameter, or a value out of range is a
:class:`BadRequest` (HTTP 400).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

AZIMUTH = (-360.0, 360.0)
ELEVATION = (-90.0, 90.0)
RADIUS_FACTOR = 4.0          # the camera stays within this many times the scene's far bound
MAX_SEQ = 2 ** 53            # what JavaScript counts exactly
CLIENT = re.compile(r"[A-Za-z0-9_-]{0,64}")
FRAME_KEYS = {"bundle", "az", "el", "r", "w", "h", "skip", "seq", "client"}


class BadRequest(ValueError):
    """A request the viewer refuses (HTTP 400), with a short reason."""


@dataclass(frozen=True)
class Limits:
    """What one bundle accepts: image sizes up to ``W x H`` and radii up to ``max_radius``."""

    W: int
    H: int
    max_radius: float


@dataclass(frozen=True)
class FrameRequest:
    """One checked frame request."""

    bundle: int
    az: float
    el: float
    r: float
    w: int
    h: int
    skip: bool = True
    seq: int | None = None    # None: never dropped as stale
    client: str = ""


def single(query: dict[str, list[str]], allowed: set[str]) -> dict[str, str]:
    """``parse_qs`` output as one value per key, refusing unknown and repeated parameters."""
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}")
    repeated = sorted(k for k, v in query.items() if len(v) != 1)
    if repeated:
        raise BadRequest(f"parameter {repeated[0]!r} given more than once")
    return {k: v[0] for k, v in query.items()}


def number(q: dict[str, str], key: str, lo: float, hi: float, default: float | None = None,
           open_low: bool = False) -> float:
    """``q[key]`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``open_low``)."""
    if key not in q:
        if default is None:
            raise BadRequest(f"missing parameter {key!r}")
        return default
    try:
        x = float(q[key])
    except ValueError:
        raise BadRequest(f"{key} must be a number, not {q[key][:40]!r}") from None
    if not math.isfinite(x) or x > hi or x < lo or (open_low and x == lo):
        raise BadRequest(f"{key} must be a finite number in {'(' if open_low else '['}{lo:g}, {hi:g}], "
                         f"not {q[key][:40]}")
    return x


def integer(q: dict[str, str], key: str, lo: int, hi: int, default: int | None = None,
            optional: bool = False) -> int | None:
    """``q[key]`` as an integer in ``[lo, hi]`` (``default`` when absent; ``None`` if ``optional``)."""
    if key not in q:
        if default is None and not optional:
            raise BadRequest(f"missing parameter {key!r}")
        return default
    text = q[key]
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        raise BadRequest(f"{key} must be an integer, not {text[:40]!r}")
    x = int(text)
    if not lo <= x <= hi:
        raise BadRequest(f"{key} must be in [{lo}, {hi}], not {x}")
    return x


def parse_frame(query: dict[str, list[str]], limits: list[Limits]) -> FrameRequest:
    """A :class:`FrameRequest` from a parsed query string (``urllib.parse.parse_qs``), checked
    against the ``limits`` of each bundle. Raises :class:`BadRequest`."""
    q = single(query, FRAME_KEYS)
    b = integer(q, "bundle", 0, len(limits) - 1, 0)
    lim = limits[b]
    client = q.get("client", "")
    if not CLIENT.fullmatch(client):
        raise BadRequest("client must be up to 64 letters, digits, '-' or '_'")
    skip = q.get("skip", "1")
    if skip not in ("0", "1"):
        raise BadRequest(f"skip must be 0 or 1, not {skip[:40]!r}")
    return FrameRequest(b, number(q, "az", *AZIMUTH), number(q, "el", *ELEVATION),
                        number(q, "r", 0.0, lim.max_radius, open_low=True),
                        integer(q, "w", 1, lim.W, lim.W), integer(q, "h", 1, lim.H, lim.H),
                        skip == "1", integer(q, "seq", 0, MAX_SEQ, optional=True), client)
