"""The fifteen damage classes, each drawn into the pixels and the mask together."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from heritageseg.data.synth.canvas import (
    _Canvas,
    _far_colour,
    _lum,
    _noise,
    _rgb255,
    _strokes,
    _walk,
)


def _blob(
    rng: np.random.Generator,
    c: _Canvas,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    rough: float,
    pad: float | None = None,
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """A crop around (cy, cx) and a field that is < 1 inside an irregular blob there.

    The noise is bounded so the blob never reaches the crop border: no straight cut edges.
    """
    pad = max(1.3, 1 + 1.5 * rough) if pad is None else pad
    y0, y1 = max(0, int(cy - pad * ry)), min(c.h, int(cy + pad * ry) + 2)
    x0, x1 = max(0, int(cx - pad * rx)), min(c.w, int(cx + pad * rx) + 2)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return None
    yy = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / ry
    xx = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / rx
    f = np.sqrt(yy * yy + xx * xx)
    if rough:
        bumps = _noise(rng, y1 - y0, x1 - x0, max(2.0, min(ry, rx) / 2.5))
        f = f + rough * np.maximum(bumps, -0.95 * (pad - 1) / rough)
    return (slice(y0, y1), slice(x0, x1)), f


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`a` moved by (dy, dx) pixels, edges repeated (np.roll would wrap them around)."""
    h, w = a.shape[:2]
    pad = ((abs(dy), abs(dy)), (abs(dx), abs(dx))) + ((0, 0),) * (a.ndim - 2)
    big = np.pad(a, pad, mode="edge")
    return big[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font: identical on every install, no files needed."""
    # Pillow >= 10.1 names it load_default_imagefont; before, load_default returned it.
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()


def _random_text(rng: np.random.Generator, n: int, alphabet: str) -> str:
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=n))


def _lerp(view: np.ndarray, sel: np.ndarray, colour: np.ndarray, alpha: float | np.ndarray) -> None:
    """view[sel] moves toward colour by alpha (scalar or one value per selected pixel)."""
    px = view[sel]
    a = alpha[:, None] if isinstance(alpha, np.ndarray) else alpha
    view[sel] = px + (colour - px) * a


def _draw_material_loss(rng: np.random.Generator, c: _Canvas) -> None:
    """Irregular holes in the paint or support showing flat substrate, often at the edges."""
    for _ in range(int(rng.integers(1, 4))):
        r = c.size * rng.uniform(0.03, 0.1)
        cy, cx = c.point(rng)
        if rng.random() < 0.35:  # losses gather at edges and corners
            cy = float(rng.choice([0, c.h - 1])) if rng.random() < 0.5 else cy
            cx = float(rng.choice([0, c.w - 1])) if cy not in (0, c.h - 1) else cx
        got = _blob(rng, c, cy, cx, r * rng.uniform(0.6, 1.4), r * rng.uniform(0.6, 1.4), 0.45)
        if got is None:
            continue
        sl, f = got
        inside = f < 1
        view = c.img[sl]
        tex = c.loss + 0.03 * rng.standard_normal(f.shape, dtype=np.float32)[..., None]
        view[inside] = np.clip(tex[inside], 0, 1)
        rim = inside & (f > 1 - 1.5 / r)
        view[rim] *= 0.7
        c.mask[sl][inside] = 1


def _draw_peel(rng: np.random.Generator, c: _Canvas) -> None:
    """Lifted flakes: shifted, lighter content with a bright rim and a cast shadow."""
    for _ in range(int(rng.integers(1, 5))):
        r = c.size * rng.uniform(0.025, 0.07)
        cy, cx = c.point(rng)
        got = _blob(rng, c, cy, cx, r, r * rng.uniform(0.7, 1.5), 0.6)
        if got is None:
            continue
        sl, f = got
        flake = f < 1
        dy, dx = (int(v) * int(rng.integers(1, 3)) for v in rng.choice([-1, 1], 2))
        view = c.img[sl]
        lifted = _shift(view, dy, dx) * 1.05 + 0.08
        shadow = _shift(flake, 2 * dy, 2 * dx) & ~flake
        rim = flake & ~_shift(flake, -dy, -dx)
        view[flake] = np.clip(lifted[flake], 0, 1)
        view[shadow] *= 0.45
        _lerp(view, rim, np.float32(1.0), 0.55)
        c.mask[sl][flake | shadow] = 2


_SPECKS = {
    1: ((0, 0),),
    2: ((0, 0), (0, 1), (1, 0), (1, 1)),
    3: ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)),
}


def _draw_dust(rng: np.random.Generator, c: _Canvas) -> None:
    """Many 1-3 px specks, light on dark areas and dark on light ones, sometimes clustered."""
    n = max(8, int(c.h * c.w / rng.uniform(700, 2500)))
    if rng.random() < 0.5:
        cy, cx = c.point(rng)
        ys, xs = rng.normal(cy, c.size * 0.25, n), rng.normal(cx, c.size * 0.25, n)
    else:
        ys, xs = rng.uniform(0, c.h, n), rng.uniform(0, c.w, n)
    ys = np.clip(ys, 0, c.h - 1).astype(np.intp)
    xs = np.clip(xs, 0, c.w - 1).astype(np.intp)
    sizes = rng.choice(3, n, p=[0.55, 0.33, 0.12]) + 1
    light = _lum(c.img[ys, xs]) < 0.55
    tone = np.where(light, rng.uniform(0.85, 1.0, n), rng.uniform(0.03, 0.2, n)).astype(np.float32)
    for size, offsets in _SPECKS.items():
        sel = sizes == size
        oy, ox = np.array(offsets).T
        yy = np.clip(ys[sel, None] + oy, 0, c.h - 1).ravel()
        xx = np.clip(xs[sel, None] + ox, 0, c.w - 1).ravel()
        c.img[yy, xx] = np.repeat(tone[sel], len(offsets))[:, None]
        c.mask[yy, xx] = 3


def _draw_scratch(rng: np.random.Generator, c: _Canvas) -> None:
    """Long, thin, nearly straight lines where the surface is abraded (light, or grey on white)."""
    film = rng.random() < 0.4
    lines = []
    for _ in range(int(rng.integers(1, 6))):
        y, x = c.point(rng)
        angle = np.pi / 2 + rng.normal(0, 0.03) if film else rng.uniform(0, np.pi)
        length = max(c.h, c.w) * rng.uniform(0.25, 0.9)
        t = np.linspace(-0.5, 0.5, 12)[:, None] * length
        wobble = np.cumsum(rng.normal(0, 0.4, 12))[:, None]
        along, across = (
            np.array([np.cos(angle), np.sin(angle)]),
            np.array([-np.sin(angle), np.cos(angle)]),
        )
        lines.append(np.array([x, y]) + t * along + wobble * across)
    m = _strokes(c.h, c.w, lines, 1 if rng.random() < 0.6 else 2)
    px = c.img[m]
    lum = _lum(px)[:, None]
    c.img[m] = np.where(lum < 0.7, px + (0.96 - px) * 0.85, px * 0.45)
    c.mask[m] = 4


def _draw_hair(rng: np.random.Generator, c: _Canvas) -> None:
    """One or two thin, smoothly curving dark fibres (light ones on dark areas)."""
    lines = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        y, x = c.point(rng)
        n = int(rng.integers(40, 150))
        curl = rng.uniform(-0.05, 0.05)
        a = rng.uniform(0, 2 * np.pi) + np.cumsum(curl + rng.normal(0, 0.05, n))
        pts = np.stack([x + np.cumsum(1.5 * np.cos(a)), y + np.cumsum(1.5 * np.sin(a))], 1)
        lines.append(pts)
    m = _strokes(c.h, c.w, lines, 1 if rng.random() < 0.8 else 2)
    lum = _lum(c.img[m])[:, None]
    c.img[m] = np.where(lum > 0.3, np.float32(rng.uniform(0.03, 0.12)), np.float32(0.78))
    c.mask[m] = 5


def _draw_dirt(rng: np.random.Generator, c: _Canvas) -> None:
    """Blotchy, soft, textured grey-brown grime (a lighter deposit on dark areas)."""
    for _ in range(int(rng.integers(1, 4))):
        r = c.size * rng.uniform(0.1, 0.25)
        cy, cx = c.point(rng)
        got = _blob(rng, c, cy, cx, r, r * rng.uniform(0.6, 1.6), 0.5)
        if got is None:
            continue
        sl, f = got
        view = c.img[sl]
        cover = np.clip((1 - f) * 2.5, 0, 1) * (0.7 + 0.3 * _noise(rng, *f.shape, r / 5))
        sel = cover > 0.3  # the label follows the patch, the grime inside it is mottled
        grain = np.clip(0.85 + 0.25 * _noise(rng, *f.shape, 4), 0.5, 1.2)
        alpha = (0.5 + 0.5 * np.clip((cover - 0.3) / 0.3, 0, 1)) * grain * rng.uniform(0.7, 0.9)
        dark = _lum(view.mean((0, 1))) > 0.35
        colour = np.array([0.24, 0.21, 0.16] if dark else [0.58, 0.53, 0.44], np.float32)
        target = colour * 0.75 + view * 0.25
        view[sel] += (target[sel] - view[sel]) * np.minimum(alpha[sel], 1)[:, None]
        c.mask[sl][sel] = 6


def _draw_fold(rng: np.random.Generator, c: _Canvas) -> None:
    """A crease right across: a bright side and a shaded side a few px wide."""
    for _ in range(1 if rng.random() < 0.8 else 2):
        y, x = c.point(rng)
        kind = rng.random()
        angle = 0.0 if kind < 0.4 else np.pi / 2 if kind < 0.8 else rng.uniform(0, np.pi)
        angle += rng.normal(0, 0.02)
        ny, nx = np.cos(angle), -np.sin(angle)
        yy = np.arange(c.h, dtype=np.float32)[:, None]
        xx = np.arange(c.w, dtype=np.float32)[None, :]
        d = (yy - y) * ny + (xx - x) * nx
        half = rng.uniform(2.0, 5.0)
        band = np.abs(d) < half
        t = (0.4 + 0.6 * (1 - np.abs(d[band]) / half))[:, None]  # visible to the band edge
        px = c.img[band]
        bright = (d[band] < 0)[:, None]
        c.img[band] = np.where(bright, px + (1 - px) * 0.45 * t, px * (1 - 0.5 * t))
        c.mask[band] = 7


def _draw_writing(rng: np.random.Generator, c: _Canvas) -> None:
    """Lines of cursive-like pen strokes (loops along a baseline, split into words)."""
    height = float(np.clip(c.size * rng.uniform(0.025, 0.05), 5, 18))
    y, x = c.point(rng)
    x = min(x, c.w * 0.6)
    length = c.w * rng.uniform(0.2, 0.5)
    lines = []
    for row in range(int(rng.integers(1, 5))):
        lines += _cursive(
            rng,
            x + rng.normal(0, height),
            y + row * height * 2.2,
            length * rng.uniform(0.5, 1),
            height,
        )
    m = _strokes(c.h, c.w, lines, 1 if height < 9 else 2)
    if not m.any():
        return
    dark_inks = np.array(
        [(0.12, 0.08, 0.05), (0.1, 0.12, 0.4), (0.05, 0.05, 0.05), (0.35, 0.35, 0.37)], np.float32
    )
    ink = dark_inks[int(rng.integers(len(dark_inks)))]
    if _lum(c.img[m].mean(0)) < 0.4:
        ink = np.array([0.92, 0.9, 0.85], np.float32)
    _lerp(c.img, m, ink, 0.9)
    c.mask[m] = 8


def _cursive(
    rng: np.random.Generator, x: float, y: float, length: float, height: float
) -> list[np.ndarray]:
    """Pen paths for one handwritten line: a looping curve per word."""
    words = []
    end, slant = x + length, rng.uniform(-0.1, 0.4)
    while x < end:
        n = int(rng.integers(2, 8))
        adv = height * rng.uniform(0.45, 0.7)
        t = np.linspace(0, 2 * np.pi * n, n * 10)
        amp = np.repeat(rng.choice([0.5, 0.5, 0.55, 1.0, 1.5], n), 10)
        ys = y - height * 0.5 * amp * (1 - np.cos(t))
        xs = (
            x
            + t / (2 * np.pi) * adv
            - rng.uniform(0.2, 0.35) * height * np.sin(t)
            + (y - ys) * slant
        )
        words.append(np.stack([xs, ys + rng.normal(0, 0.3, len(t))], 1))
        x += n * adv + height * rng.uniform(0.6, 1.2)
    return words


def _draw_cracks(rng: np.random.Generator, c: _Canvas) -> None:
    """Thin dark craquelure networks or branching cracks (light where paint is dark)."""
    m = np.zeros((c.h, c.w), dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.55:
            _crack_network(rng, c, m)
        else:
            y, x = c.point(rng)
            paths = _branching(
                rng, x, y, rng.uniform(0, 2 * np.pi), int(rng.integers(25, 90)), depth=2
            )
            m |= _strokes(c.h, c.w, paths, 1 if rng.random() < 0.7 else 2)
    px = c.img[m]
    dark = (_lum(px) < 0.22)[:, None]
    c.img[m] = np.where(dark, px + (c.loss - px) * 0.7, px * 0.3)
    c.mask[m] = 9


def _branching(
    rng: np.random.Generator, x: float, y: float, angle: float, n: int, depth: int
) -> list[np.ndarray]:
    path = _walk(rng, x, y, angle, n, 3.0, 0.25)
    paths = [path]
    if depth > 0 and n > 8:
        for i in rng.integers(1, n, int(rng.integers(1, 4))):
            turn = rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)
            paths += _branching(rng, path[i, 0], path[i, 1], angle + turn, n // 2, depth - 1)
    return paths


def _crack_network(rng: np.random.Generator, c: _Canvas, m: np.ndarray) -> None:
    """Craquelure: a jittered lattice of wobbly edges clipped to an irregular patch."""
    r = c.size * rng.uniform(0.12, 0.35)
    cy, cx = c.point(rng)
    got = _blob(rng, c, cy, cx, r, r * rng.uniform(0.7, 1.4), 0.4)
    if got is None:
        return
    sl, f = got
    hh, ww = f.shape
    cell = max(float(rng.uniform(9, 24)), np.sqrt(hh * ww / 300))
    ny, nx = int(hh / cell) + 2, int(ww / cell) + 2
    gy = (np.arange(ny)[:, None] + rng.uniform(-0.35, 0.35, (ny, nx))) * cell
    gx = (np.arange(nx)[None, :] + rng.uniform(-0.35, 0.35, (ny, nx))) * cell
    ends = [
        (gx[:, :-1], gy[:, :-1], gx[:, 1:], gy[:, 1:]),
        (gx[:-1], gy[:-1], gx[1:], gy[1:]),
    ]
    im = Image.new("L", (ww, hh))
    draw = ImageDraw.Draw(im)
    for x0, y0, x1, y1 in ends:
        keep = rng.random(x0.shape) < 0.8
        mx = (x0 + x1) / 2 + rng.normal(0, 0.12 * cell, x0.shape)
        my = (y0 + y1) / 2 + rng.normal(0, 0.12 * cell, x0.shape)
        segs = np.stack([x0, y0, mx, my, x1, y1], -1)[keep]
        for seg in segs.tolist():
            draw.line(seg, fill=255, width=1)
    m[sl] |= (np.asarray(im) > 0) & (f < 1)


def _draw_staining(rng: np.random.Generator, c: _Canvas) -> None:
    """Translucent yellow-brown rounded blotches with a darker tide line at the edge."""
    colours = np.array(
        [(0.78, 0.6, 0.3), (0.55, 0.36, 0.16), (0.7, 0.58, 0.4), (0.42, 0.38, 0.22)], np.float32
    )
    for _ in range(int(rng.integers(1, 4))):
        r = c.size * rng.uniform(0.07, 0.22)
        cy, cx = c.point(rng)
        got = _blob(rng, c, cy, cx, r, r * rng.uniform(0.7, 1.4), 0.25)
        if got is None:
            continue
        sl, f = got
        view = c.img[sl]
        stain = f < 1
        colour = _far_colour(colours, view[stain].mean(0)) if stain.any() else colours[0]
        alpha = rng.uniform(0.35, 0.55) * (0.85 + 0.15 * _noise(rng, *f.shape, r / 4))
        tide = stain & (f > 1 - rng.uniform(2.0, 4.0) / r)
        _lerp(view, stain, colour, alpha[stain])
        _lerp(view, tide, colour * 0.55, 0.5)
        c.mask[sl][stain] = 10


def _draw_stamp(rng: np.random.Generator, c: _Canvas) -> None:
    """Round ink stamps: double ring, marks around it and letters in the middle."""
    inks = np.array([(0.75, 0.12, 0.12), (0.15, 0.2, 0.62), (0.45, 0.15, 0.5)], np.float32)
    for _ in range(1 if rng.random() < 0.75 else 2):
        radius = int(np.clip(c.size * rng.uniform(0.06, 0.12), 10, 60))
        size = 2 * radius + 3
        im = Image.new("L", (size, size))
        draw = ImageDraw.Draw(im)
        ring = max(2, radius // 12)
        draw.ellipse([1, 1, size - 2, size - 2], outline=255, width=ring)
        inner = radius * 0.72
        mid = size / 2
        draw.ellipse([mid - inner, mid - inner, mid + inner, mid + inner], outline=255, width=1)
        for a in np.linspace(0, 2 * np.pi, int(rng.integers(10, 24)), endpoint=False):
            r0, r1 = inner + 2, radius - ring - 1
            draw.line(
                [
                    mid + r0 * np.cos(a),
                    mid + r0 * np.sin(a),
                    mid + r1 * np.cos(a),
                    mid + r1 * np.sin(a),
                ],
                fill=255,
                width=2,
            )
        text = _random_text(rng, int(rng.integers(2, 5)), "ABCDEFGHIKLMNOPRSTUVZ")
        left, top, right, bottom = _font().getbbox(text)
        corner = (mid - (left + right) / 2, mid - (top + bottom) / 2)
        draw.text(corner, text, fill=255, font=_font())
        im = im.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.NEAREST)
        ink = np.asarray(im, dtype=np.float32) / 255 * (rng.uniform(size=(size, size)) > 0.15)
        y, x = c.point(rng)
        y0, x0 = int(y) - size // 2, int(x) - size // 2
        ys, xs = slice(max(0, y0), min(c.h, y0 + size)), slice(max(0, x0), min(c.w, x0 + size))
        local = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        yy, xx = np.ogrid[:size, :size]
        disc = ((yy - mid + 0.5) ** 2 + (xx - mid + 0.5) ** 2 <= (radius + 1) ** 2)[local]
        view = c.img[ys, xs]
        colour = _far_colour(inks, view.mean((0, 1))) if view.size else inks[0]
        alpha = np.maximum(ink[local] * 0.85, 0.2 * disc)
        _lerp(view, disc, colour, alpha[disc])
        c.mask[ys, xs][disc] = 11


def _draw_sticker(rng: np.random.Generator, c: _Canvas) -> None:
    """Opaque paper labels with a few lines of text, slightly askew."""
    for _ in range(1 if rng.random() < 0.8 else 2):
        w = int(np.clip(c.w * rng.uniform(0.12, 0.3), 24, 160))
        h = int(np.clip(w * rng.uniform(0.3, 0.6), 14, 90))
        paper = [(0.96, 0.95, 0.92), (0.93, 0.88, 0.74), (0.98, 0.96, 0.8)][int(rng.integers(3))]
        label = Image.new("RGBA", (w, h), (*_rgb255(paper), 255))
        draw = ImageDraw.Draw(label)
        if rng.random() < 0.4:
            draw.rectangle([2, 2, w - 3, h - 3], outline=(170, 40, 40, 255), width=1)
        for row in range(max(1, (h - 6) // 13)):
            text = _random_text(
                rng, int(rng.integers(3, max(4, w // 7))), "ABCDEFGHIJKLMNOPRSTUVW0123456789 .-"
            )
            draw.text((5, 4 + row * 13), text, fill=(30, 30, 35, 255), font=_font())
        label = label.rotate(
            float(rng.normal(0, 4)), resample=Image.Resampling.BICUBIC, expand=True
        )
        arr = np.asarray(label, dtype=np.float32) / 255
        y, x = c.point(rng)
        lh, lw = arr.shape[:2]
        y0, x0 = int(y) - lh // 2, int(x) - lw // 2
        ys, xs = slice(max(0, y0), min(c.h, y0 + lh)), slice(max(0, x0), min(c.w, x0 + lw))
        part = arr[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        solid = part[..., 3] > 0.5
        c.img[ys, xs][solid] = part[..., :3][solid]
        c.mask[ys, xs][solid] = 12


def _draw_puncture(rng: np.random.Generator, c: _Canvas) -> None:
    """Small round holes: a dark void with a pale torn rim."""
    cy, cx = c.point(rng)
    n = int(rng.integers(1, 5))
    behind = np.float32(rng.uniform(0.02, 0.12))
    for _ in range(n):
        y, x = cy + rng.normal(0, c.size * 0.05), cx + rng.normal(0, c.size * 0.05)
        r = rng.uniform(1.5, 4.5)
        got = _blob(rng, c, y, x, r + 1.5, r + 1.5, 0.1, pad=1.2)
        if got is None:
            continue
        sl, f = got
        view = c.img[sl]
        hole, rim = f < r / (r + 1.5), f < 1
        _lerp(view, rim & ~hole, np.float32(0.9), 0.6)
        view[hole] = behind
        c.mask[sl][rim] = 13


def _draw_burn(rng: np.random.Generator, c: _Canvas) -> None:
    """Small charred spots: a black-brown core in an orange-brown scorched halo."""
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(3, 9) * max(1.0, c.size / 400)
        cy, cx = c.point(rng)
        got = _blob(rng, c, cy, cx, r, r * rng.uniform(0.7, 1.3), 0.35, pad=1.8)
        if got is None:
            continue
        sl, f = got
        view = c.img[sl]
        halo = f < 1.4
        alpha = np.clip((1.4 - f) / 0.8, 0, 0.9)
        _lerp(view, halo, np.array([0.5, 0.27, 0.08], np.float32), alpha[halo])
        core = f < 0.55
        view[core] = np.array([0.07, 0.045, 0.03], np.float32) * (
            1 + 0.3 * rng.standard_normal((int(core.sum()), 1))
        )
        c.mask[sl][f < 1] = 14


def _draw_lightleak(rng: np.random.Generator, c: _Canvas) -> None:
    """A warm glow entering from an edge or corner, added to the image; labelled where strong."""
    yy = np.linspace(0, 1, c.h, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, c.w, dtype=np.float32)[None, :]
    across, down = (yy, 1 - yy)[int(rng.integers(2))], (xx, 1 - xx)[int(rng.integers(2))]
    kind = rng.random()
    d = across if kind < 0.3 else down if kind < 0.6 else np.sqrt(across**2 + down**2)
    d = d * (1 + 0.25 * np.clip(_noise(rng, c.h, c.w, c.size / 3), -1, 1))
    strength = rng.uniform(0.7, 1.0)
    glow = strength * np.exp(-((np.maximum(d, 0) / rng.uniform(0.15, 0.35)) ** 1.5))
    colour = np.array(
        [(1.0, 0.45, 0.12), (1.0, 0.25, 0.1), (1.0, 0.75, 0.25)][int(rng.integers(3))], np.float32
    )
    g = glow[..., None].astype(np.float32)
    c.img[:] = np.clip(c.img + (colour - c.img) * 0.55 * g + 0.45 * g * colour, 0, 1)
    c.mask[glow > 0.3] = 15


_DAMAGE_DRAW: dict[int, Callable[[np.random.Generator, _Canvas], None]] = {
    1: _draw_material_loss,
    2: _draw_peel,
    3: _draw_dust,
    4: _draw_scratch,
    5: _draw_hair,
    6: _draw_dirt,
    7: _draw_fold,
    8: _draw_writing,
    9: _draw_cracks,
    10: _draw_staining,
    11: _draw_stamp,
    12: _draw_sticker,
    13: _draw_puncture,
    14: _draw_burn,
    15: _draw_lightleak,
}
