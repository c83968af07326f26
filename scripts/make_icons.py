"""Draw the app's icons (a white speech bubble on the brand blue) into sitecomms/web/static/icons.

Standard library only (zlib, struct): each pixel's coverage of the bubble comes from a signed
distance, so the edges are anti-aliased without a drawing library. `icon-<n>.png` (purpose
"any") is a rounded square with the bubble large; `maskable-<n>.png` fills the whole square
with the brand colour and keeps the bubble inside the central circle of 40% radius, the safe
zone a platform's mask never cuts. Run `python scripts/make_icons.py` after changing the drawing
and commit the PNGs.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

ICONS = Path(__file__).resolve().parent.parent / "sitecomms" / "web" / "static" / "icons"
BRAND = (0x1F, 0x6F, 0xEB)  # app.css --accent
WHITE = (0xFF, 0xFF, 0xFF)
SIZES = (192, 512)
SAFE_RADIUS = 0.4  # of the size: maskable icons keep every drawn pixel of the glyph inside it
GLYPH_REACH = 1.2  # the glyph's farthest point from its centre, in its own units (the tail's tip: 1.18)


def rounded_box(x: float, y: float, half_w: float, half_h: float, radius: float) -> float:
    """Signed distance from (x, y) to a rounded rectangle centred on the origin (negative inside)."""
    qx, qy = abs(x) - half_w + radius, abs(y) - half_h + radius
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    return outside + min(max(qx, qy), 0.0) - radius


def triangle(x: float, y: float, corners: tuple[tuple[float, float], ...]) -> float:
    """Signed distance to a triangle (negative inside)."""
    best = math.inf
    sign = 1.0
    inside = True
    for index, (ax, ay) in enumerate(corners):
        bx, by = corners[(index + 1) % 3]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = max(0.0, min(1.0, (wx * ex + wy * ey) / (ex * ex + ey * ey)))
        best = min(best, math.hypot(wx - ex * t, wy - ey * t))
        if ex * wy - ey * wx < 0:
            inside = False
    if inside:
        sign = -1.0
    return sign * best


def bubble(x: float, y: float) -> float:
    """The glyph in unit coordinates (about -1..1): a rounded bubble with a tail, minus three dots."""
    body = rounded_box(x, y + 0.12, 0.95, 0.66, 0.34)
    tail = triangle(x, y, ((-0.55, 0.35), (-0.05, 0.45), (-0.7, 0.95)))
    shape = min(body, tail)
    dots = min(math.hypot(x - dx, y + 0.12) - 0.13 for dx in (-0.42, 0.0, 0.42))
    return max(shape, -dots)


def coverage(distance: float, pixel: float) -> float:
    return max(0.0, min(1.0, 0.5 - distance / pixel))


def draw(size: int, *, maskable: bool) -> list[bytes]:
    """Rows of RGBA pixels."""
    glyph_half = (SAFE_RADIUS if maskable else 0.45) * size / GLYPH_REACH  # the glyph's unit, in pixels
    corner = 0.0 if maskable else 0.2 * size
    rows = []
    for row in range(size):
        line = bytearray()
        for column in range(size):
            px, py = column + 0.5 - size / 2, row + 0.5 - size / 2
            background = coverage(rounded_box(px, py, size / 2, size / 2, corner), 1.0) if corner else 1.0
            ink = coverage(bubble(px / glyph_half, py / glyph_half) * glyph_half, 1.0)
            colour = [round(b + (w - b) * ink) for b, w in zip(BRAND, WHITE, strict=True)]
            line += bytes([*colour, round(255 * background)])
        rows.append(bytes(line))
    return rows


def png(rows: list[bytes], size: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def main() -> None:
    ICONS.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        for maskable, name in ((False, "icon"), (True, "maskable")):
            path = ICONS / f"{name}-{size}.png"
            path.write_bytes(png(draw(size, maskable=maskable), size))
            print(path)


if __name__ == "__main__":
    main()
