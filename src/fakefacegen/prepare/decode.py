"""Decode one image file and make it a training image: RGB conversion, centre square crop, resize.

See the policy in :mod:`fakefacegen.prepare` (modes, transparency, 16-bit grey, EXIF orientation,
JPEG draft decoding, what is skipped). :func:`decode_image` raises :class:`Skip` with a one-line
reason for a file that cannot be used.
"""

from __future__ import annotations

import io
import math
import struct
import warnings

import numpy as np
from PIL import Image

from ..dataset_format import one_line
from .errors import Skip

# Pillow format names accepted when decoding (JPEG also yields "MPO" images).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")

_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _sixteen_to_8(arr: np.ndarray) -> np.ndarray:
    a = np.clip(arr.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB (alpha composited onto white)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode == "I":
        g = _sixteen_to_8(np.asarray(im))
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "F":
        g = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


def _decode_reason(e: BaseException) -> str:
    msg = str(e).lower()
    if isinstance(e, EOFError) or "truncated" in msg or "eof" in msg or "premature end" in msg:
        return "truncated"
    return f"corrupt image data: {type(e).__name__}: {one_line(e, 120)}"


def decode_image(data: bytes, cfg: dict) -> tuple[np.ndarray, str | None, bool, bool]:
    """Decode, crop, resize.  Returns (pixels, from_mode or None, draft_used, transposed).

    ``cfg`` holds the settings: ``size``, ``min_side``, ``max_pixels``, ``draft`` and ``resample``
    (the Pillow filter).
    """
    size = cfg["size"]
    if not data:
        raise Skip("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except Image.DecompressionBombError as e:
            raise Skip(f"decompression bomb: {one_line(e, 120)}") from None
        except Image.UnidentifiedImageError:
            raise Skip("not a JPEG/PNG/WebP image (cannot identify)") from None
        except (OSError, EOFError, SyntaxError, ValueError, struct.error) as e:
            raise Skip(_decode_reason(e)) from None
        w, h = im.size
        if w * h > cfg["max_pixels"]:
            raise Skip(f"decompression bomb guard: {w}x{h} = {w * h} px > max_pixels {cfg['max_pixels']}")
        side = min(w, h)
        if side < cfg["min_side"]:
            raise Skip(f"too small ({w}x{h}, shorter side < min_side {cfg['min_side']})")
        left, top = (w - side) // 2, (h - side) // 2
        scale: float = 1
        if cfg["draft"] and im.format in ("JPEG", "MPO"):
            for a in (8, 4, 2):
                if side >= size * a:
                    res = im.draft(None, (w // a, h // a))
                    if res is not None:
                        draft_box = res[1]
                        scale = w / draft_box[2] if draft_box[2] else 1
                    break
            if side < size * scale:  # Pillow chose a coarser scale than asked
                im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
                scale = 1
        from_mode = None if im.mode == "RGB" else im.mode
        orientation = 1
        try:
            im.load()
        except Image.DecompressionBombError as e:
            raise Skip(f"decompression bomb: {one_line(e, 120)}") from None
        except (OSError, EOFError, SyntaxError, ValueError, struct.error) as e:
            raise Skip(_decode_reason(e)) from None
        if "exif" in im.info:
            try:
                orientation = int(im.getexif().get(0x0112, 1))
            except Exception:  # broken EXIF: keep the pixels, ignore the orientation
                orientation = 1
        rgb = _to_rgb(im)
        # Crop first (so the filter sees no pixels outside the square, exactly like
        # crop-then-resize), then resize.  In a draft-decoded image the square's
        # edges may fall between pixels: crop the enclosing integer box and pass
        # the fractional remainder as the resize box.
        x0, y0 = left / scale, top / scale
        x1, y1 = (left + side) / scale, (top + side) / scale
        ix0, iy0 = int(x0), int(y0)
        ix1, iy1 = min(rgb.width, math.ceil(x1)), min(rgb.height, math.ceil(y1))
        crop = rgb.crop((ix0, iy0, ix1, iy1))
        box = (x0 - ix0, y0 - iy0, min(x1, ix1) - ix0, min(y1, iy1) - iy0)
        out = crop.resize((size, size), cfg["resample"], box=box)
        transposed = False
        if orientation in _EXIF_TRANSPOSE:
            out = out.transpose(_EXIF_TRANSPOSE[orientation])
            transposed = True
    arr = np.asarray(out, dtype=np.uint8)
    if arr.shape != (size, size, 3):  # defensive; should never happen
        raise Skip(f"unexpected decoded shape {arr.shape}")
    return arr, from_mode, scale > 1, transposed
