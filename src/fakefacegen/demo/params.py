"""Request validation: the limits of every route and strict parsing of query parameters.

Unknown or repeated parameters and out-of-range values are a :class:`BadRequest` (a 400 whose
one-line message the client sees). The limits, all checked before any work starts:

==================  ================================================================================
seed                0..SEED_MAX (2**32 - 1)
index               0..INDEX_MAX (2**31 - 1)
n (grid)            1..MAX_GRID (64); cols 1..MAX_GRID; pad 0..MAX_PAD (16)
truncation          TRUNCATION_RANGE (0.3..1.0) or off
frames (walks)      2..MAX_FRAMES (64); fps FPS_RANGE (1..60)
scale               1..MAX_SCALE (8)
one image           at most MAX_SIDE (4096) pixels per side and MAX_PIXELS (4096**2) pixels in all
                    (every frame of an animation counted), whatever the other parameters allow
photo upload        at most MAX_UPLOAD_BYTES (16 MiB) and MAX_PHOTO_PIXELS (25 Mpx); steps
                    PROJECT_STEPS_RANGE (0..100)
edit, edit_a/_b     NAME:AMOUNT pairs (``Smiling:2,Young:-1``): offered attribute names only, each once,
                    at most EDIT_MAX_ATTRS (12) of them, AMOUNT a finite number in -EDIT_AMOUNT_MAX..
                    EDIT_AMOUNT_MAX (5) sigmas, at most EDIT_MAX_CHARS (1000) characters in all
==================  ================================================================================

``commands/`` imports these names to bound the same flags on the command line: keep them stable."""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request

from .. import bounds

# The limits the command line shares (interpolate's flags): one source, fakefacegen.bounds.
SEED_MAX = bounds.SEED_MAX
INDEX_MAX = 2**31 - 1
MAX_GRID = 64
TRUNCATION_RANGE = (bounds.TRUNCATION_LO, bounds.TRUNCATION_HI)
MAX_FRAMES = bounds.WALK_FRAMES_MAX
MAX_SCALE = bounds.SCALE_MAX
MAX_SIDE = 4096  # longest side of any image the server renders (bounds the memory of one render)
MAX_PIXELS = MAX_SIDE * MAX_SIDE  # pixels of one response, all frames of an animation counted (~50 MB as RGB)
MAX_PAD = 16
FPS_RANGE = (bounds.FPS_LO, bounds.FPS_HI)
MAX_UPLOAD_BYTES = 16 << 20  # a photo upload's body
MAX_PHOTO_PIXELS = 25_000_000  # a photo's width x height, read from its header before it is decoded
PROJECT_STEPS_RANGE = (0, 100)
PROJECT_DEFAULT_STEPS = 40
EDIT_AMOUNT_MAX = bounds.EDIT_AMOUNT_MAX
EDIT_MAX_ATTRS = bounds.EDIT_ATTRS_MAX
EDIT_MAX_CHARS = bounds.EDIT_CHARS_MAX

Edit = tuple[tuple[str, float], ...]
"""An attribute edit as the server keys it: (name, amount) pairs sorted by name, no zero amounts (so
``Smiling:0`` is the unedited face, and ``Young:-1,Smiling:2`` and ``Smiling:2,Young:-1`` share a cache entry)."""


def edit_str(edit: Edit) -> str:
    """The edit as the query writes it: 'Smiling:2,Young:-1' ('' for none)."""
    return ",".join(f"{a}:{v:g}" for a, v in edit)


class BadRequest(HTTPException):
    """A 400 whose detail is the one-line message the client sees."""

    def __init__(self, message: str):
        super().__init__(400, message)


@dataclass(frozen=True)
class FaceId:
    """One face: image ``index`` of ``seed``."""

    seed: int
    index: int

    def __str__(self) -> str:
        return f"{self.seed}:{self.index}"


@dataclass(frozen=True)
class PhotoId:
    """A projected photo, by the id that ``POST /api/project`` answered (one end of a walk)."""

    id: str

    def __str__(self) -> str:
        return f"photo:{self.id}"


PHOTO_ID_RE = r"[0-9a-f]{16}"


class Params:
    """Strict query parsing: unknown or repeated parameters and bad values are a :class:`BadRequest`."""

    def __init__(self, request: Request, allowed: set[str]):
        q = request.query_params
        for key in q.keys():
            if key not in allowed:
                raise BadRequest(
                    f"unknown parameter {key!r} for {request.url.path} (allowed: {', '.join(sorted(allowed))})"
                )
            if len(q.getlist(key)) > 1:
                raise BadRequest(f"parameter {key!r} is given more than once")
        self.q = q

    def int(self, name: str, default: int | None, lo: int, hi: int) -> int:
        raw = self.q.get(name)
        if raw is None:
            if default is None:
                raise BadRequest(f"missing parameter {name!r} (an integer {lo}..{hi})")
            return default
        if not re.fullmatch(r"[+-]?\d{1,20}", raw.strip()):
            raise BadRequest(f"{name} must be an integer {lo}..{hi}, got {raw[:40]!r}")
        v = int(raw)
        if not lo <= v <= hi:
            raise BadRequest(f"{name} must be an integer {lo}..{hi}, got {v}")
        return v

    def float(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self.q.get(name)
        if raw is None:
            return default
        try:
            v = float(raw)
        except ValueError:
            raise BadRequest(f"{name} must be a number {lo:g}..{hi:g}, got {raw[:40]!r}") from None
        if not (math.isfinite(v) and lo <= v <= hi):
            raise BadRequest(f"{name} must be a number {lo:g}..{hi:g}, got {raw[:40]!r}")
        return v

    def truncation(self) -> builtins.float | None:  # the name float is the method above in this class
        """``truncation``: absent, empty or 'off' = plain normal noise; else a number in TRUNCATION_RANGE."""
        raw = self.q.get("truncation")
        if raw is None or raw.strip().lower() in ("", "off", "none"):
            return None
        lo, hi = TRUNCATION_RANGE
        v = self.float("truncation", 0.0, lo, hi)
        return round(v, 4)  # 0.7 and 0.70000001 are the same faces; keep one cache entry

    def face(self, name: str) -> FaceId:
        raw = self.q.get(name)
        if raw is None:
            raise BadRequest(f"missing parameter {name!r} (a face as SEED:INDEX, e.g. {name}=42:3)")
        m = re.fullmatch(r"\s*(\d{1,10}):(\d{1,10})\s*", raw)
        if not m or int(m.group(1)) > SEED_MAX or int(m.group(2)) > INDEX_MAX:
            raise BadRequest(
                f"{name} must be a face as SEED:INDEX with SEED 0..{SEED_MAX} and INDEX "
                f"0..{INDEX_MAX}, got {raw[:40]!r}"
            )
        return FaceId(int(m.group(1)), int(m.group(2)))

    def end(self, name: str) -> FaceId | PhotoId:
        """One end of a walk: a face (SEED:INDEX) or a projected photo (photo:ID)."""
        raw = self.q.get(name)
        if raw is not None and raw.strip().startswith("photo:"):
            m = re.fullmatch(rf"\s*photo:({PHOTO_ID_RE})\s*", raw)
            if not m:
                raise BadRequest(f"{name} must be photo:ID with the 16 hex digits of a projection, got {raw[:40]!r}")
            return PhotoId(m.group(1))
        return self.face(name)

    def edit(
        self,
        name: str,
        offered: Collection[str] | None,
        *,
        unavailable: str = "",
        not_offered: Mapping[str, str] | None = None,
    ) -> Edit:
        """``name``: an attribute edit ``NAME:AMOUNT,...`` (absent or empty: none). ``offered``: the names the
        model has directions for (None: it has none, and any edit is refused with ``unavailable`` as the reason);
        ``not_offered``: why a known attribute is not offered."""
        raw = self.q.get(name)
        if raw is None or raw.strip() == "":
            return ()
        if offered is None:
            raise BadRequest(f"{name}: this model cannot be edited: {unavailable or 'it has no attribute directions'}")
        if len(raw) > EDIT_MAX_CHARS:
            raise BadRequest(f"{name} is {len(raw)} characters long; the limit is {EDIT_MAX_CHARS}")
        items = raw.split(",")
        if len(items) > EDIT_MAX_ATTRS:
            raise BadRequest(f"{name}: at most {EDIT_MAX_ATTRS} attributes at once, got {len(items)}")
        out: dict[str, float] = {}
        for it in items:
            m = re.fullmatch(r"\s*([A-Za-z0-9_]{1,40})\s*:\s*([^:]{1,40}?)\s*", it)
            if not m:
                raise BadRequest(
                    f"{name} must be NAME:AMOUNT pairs separated by commas, e.g. {name}=Smiling:2,Young:-1; "
                    f"got {it[:40]!r}"
                )
            attr, text = m.groups()
            if attr not in offered:
                why = (not_offered or {}).get(attr)
                if why:
                    raise BadRequest(f"{name}: {attr} is not offered for this model ({why})")
                raise BadRequest(
                    f"{name}: unknown attribute {attr!r} (/api/attributes lists the {len(offered)} this model offers)"
                )
            try:
                v = builtins.float(text)
            except ValueError:
                v = math.nan
            if not (math.isfinite(v) and abs(v) <= EDIT_AMOUNT_MAX):
                raise BadRequest(
                    f"{name}: the amount of {attr} must be a number -{EDIT_AMOUNT_MAX:g}..{EDIT_AMOUNT_MAX:g} "
                    f"(sigmas), got {text[:40]!r}"
                )
            if attr in out:
                raise BadRequest(f"{name}: {attr} is given more than once")
            out[attr] = round(v, 4) + 0.0  # + 0.0: -0.0 is 0.0
        return tuple(sorted((a, v) for a, v in out.items() if v != 0.0))

    def photo(self, name: str = "id") -> PhotoId:
        raw = self.q.get(name)
        if raw is None or not re.fullmatch(PHOTO_ID_RE, raw.strip()):
            got = "nothing" if raw is None else repr(raw[:40])
            raise BadRequest(f"{name} must be the 16 hex digits of a projection, got {got}")
        return PhotoId(raw.strip())


def check_size(h: int, w: int, what: str, frames: int = 1, lower: str = "scale or n") -> None:
    """One image of ``w`` x ``h`` pixels (``frames`` of them for an animation): at most MAX_SIDE per side
    and MAX_PIXELS in all, else a BadRequest naming the parameters to ``lower``."""
    if max(h, w) > MAX_SIDE:
        raise BadRequest(f"{what} would be {w}x{h} pixels; the limit is {MAX_SIDE} per side (lower {lower})")
    if frames * w * h > MAX_PIXELS:
        each = f"{frames} frames of {w}x{h} = " if frames > 1 else f"{w}x{h} = "
        raise BadRequest(
            f"{what} would be {each}{frames * w * h:,} pixels; the limit is {MAX_PIXELS:,} per request (lower {lower})"
        )
