"""Request validation: the limits of every route and strict parsing of query parameters.

Unknown or repeated parameters and out-of-range values are a :class:`BadRequest` (a 400 whose
one-line message the client sees)."""

from __future__ import annotations

import builtins
import math
import re
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request

SEED_MAX = 2**32 - 1
INDEX_MAX = 2**31 - 1
MAX_GRID = 64
TRUNCATION_RANGE = (0.3, 1.0)
MAX_FRAMES = 64
MAX_SCALE = 8
MAX_SIDE = 4096  # longest side of any image the server renders (bounds the memory of one render)


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


def check_size(h: int, w: int, what: str) -> None:
    if max(h, w) > MAX_SIDE:
        raise BadRequest(f"{what} would be {w}x{h} pixels; the limit is {MAX_SIDE} per side (lower scale or n)")
