"""The four kinds of content, painted before any material or damage is applied."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from heritageseg.data.synth.canvas import _lum, _noise, _rgb255, _to_float, _to_pil, _walk
from heritageseg.data.synth.metadata import _join

_SKIES = (
    ((0.25, 0.45, 0.8), (0.75, 0.85, 0.95), "blue"),
    ((0.85, 0.6, 0.3), (0.98, 0.86, 0.6), "golden"),
    ((0.22, 0.2, 0.42), (0.9, 0.55, 0.4), "dusky"),
    ((0.5, 0.52, 0.55), (0.82, 0.82, 0.8), "grey"),
    ((0.78, 0.6, 0.22), (0.86, 0.7, 0.3), "gilded"),
    ((0.1, 0.1, 0.14), (0.3, 0.25, 0.22), "dark"),
)
_GROUNDS = (
    ((0.4, 0.55, 0.22), (0.15, 0.3, 0.1)),
    ((0.72, 0.56, 0.3), (0.45, 0.3, 0.15)),
    ((0.5, 0.38, 0.25), (0.25, 0.17, 0.1)),
    ((0.35, 0.4, 0.3), (0.12, 0.14, 0.1)),
)
_PIGMENTS = np.array(
    [
        (0.7, 0.15, 0.12),
        (0.15, 0.25, 0.6),
        (0.85, 0.7, 0.25),
        (0.2, 0.45, 0.25),
        (0.9, 0.85, 0.75),
        (0.5, 0.2, 0.4),
        (0.35, 0.22, 0.12),
        (0.1, 0.1, 0.1),
        (0.85, 0.55, 0.45),
        (0.6, 0.65, 0.7),
    ],
    dtype=np.float32,
)


def _gradient(h: int, w: int, top: tuple, bottom: tuple) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    row = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.broadcast_to(row, (h, w, 3))


def _draw_artistic(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    """Painterly scene: sky and ground gradients, blobby hills, trees, figures, brush strokes."""
    sky_top, sky_bottom, sky_name = _SKIES[int(rng.integers(len(_SKIES)))]
    ground = _GROUNDS[int(rng.integers(len(_GROUNDS)))]
    horizon = int(h * rng.uniform(0.3, 0.7))
    img = np.concatenate(
        [_gradient(horizon, w, sky_top, sky_bottom), _gradient(h - horizon, w, *ground)]
    )
    pil = _to_pil(img)
    draw = ImageDraw.Draw(pil)
    s = min(h, w)
    for _ in range(int(rng.integers(1, 4))):  # hills along the horizon
        xs = np.linspace(-10, w + 10, 24)
        ys = horizon - s * rng.uniform(0.03, 0.15) * (
            1 + np.sin(xs / w * rng.uniform(2, 7) + rng.uniform(0, 6))
        )
        colour = np.asarray(ground[0]) * rng.uniform(0.6, 1.1)
        draw.polygon([*zip(xs, ys, strict=True), (w + 10, h), (-10, h)], fill=_rgb255(colour))
    things = []
    n_trees, n_figures = int(rng.integers(0, 5)), int(rng.integers(0, 5))
    if n_trees:
        things.append("trees")
    for _ in range(n_trees):
        x, base, size = (
            rng.uniform(0, w),
            horizon + rng.uniform(0, 0.3) * (h - horizon),
            s * rng.uniform(0.12, 0.35),
        )
        draw.rectangle(
            [x - size * 0.05, base - size * 0.5, x + size * 0.05, base], fill=(70, 45, 25)
        )
        leaf = _rgb255(np.asarray(ground[1]) * rng.uniform(0.7, 1.4))
        draw.ellipse([x - size * 0.3, base - size, x + size * 0.3, base - size * 0.4], fill=leaf)
    portrait = n_figures == 0 or rng.random() < 0.25
    if portrait:
        n_figures = 1
    things.append("a figure" if n_figures == 1 else f"{n_figures} figures")
    for _ in range(n_figures):
        size = s * (rng.uniform(0.6, 0.9) if portrait else rng.uniform(0.15, 0.4))
        x = w / 2 + (rng.uniform(-0.1, 0.1) if portrait else rng.uniform(-0.45, 0.45)) * w
        base = h if portrait else horizon + rng.uniform(0.1, 0.8) * (h - horizon)
        _figure(rng, draw, x, base, size)
    if sky_name not in ("dark", "gilded") and rng.random() < 0.4:
        r, x, y = (
            s * rng.uniform(0.03, 0.07),
            rng.uniform(0.1, 0.9) * w,
            horizon * rng.uniform(0.15, 0.6),
        )
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(250, 235, 180))
        things.append("the sun")
    _brush_strokes(rng, pil, h * w // 350)
    pil = pil.filter(ImageFilter.GaussianBlur(0.7))
    subject = f"{_join(things)} under a {sky_name} sky"
    return _to_float(pil), subject


def _figure(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, x: float, base: float, size: float
) -> None:
    """A standing figure: robe, head and sometimes a halo, as in devotional scenes."""
    robe = _rgb255(_PIGMENTS[int(rng.integers(len(_PIGMENTS)))])
    skin = _rgb255(np.array([0.85, 0.65, 0.5]) * rng.uniform(0.6, 1.05))
    head = size * 0.11
    top = base - size
    if rng.random() < 0.3:
        draw.ellipse(
            [x - head * 1.8, top - head * 0.6, x + head * 1.8, top + head * 2.9],
            fill=(215, 170, 60),
        )
    draw.polygon(
        [
            (x - size * 0.12, top + head * 2),
            (x + size * 0.12, top + head * 2),
            (x + size * 0.22, base),
            (x - size * 0.22, base),
        ],
        fill=robe,
    )
    draw.ellipse([x - head, top, x + head, top + head * 2.3], fill=skin)


def _brush_strokes(rng: np.random.Generator, pil: Image.Image, n: int) -> None:
    """Short strokes in jittered local colours: painterly texture without a real brush model."""
    w, h = pil.size
    arr = np.asarray(pil)
    xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
    colours = np.clip(arr[ys, xs].astype(np.int32) + rng.integers(-14, 15, (n, 3)), 0, 255)
    angle = rng.uniform(0, np.pi) + rng.normal(0, 0.4, n)
    length = rng.uniform(4, 14, n)
    dx, dy = np.cos(angle) * length, np.sin(angle) * length
    widths = rng.integers(2, 6, n)
    draw = ImageDraw.Draw(pil)
    for i in range(n):
        draw.line(
            [float(xs[i]), float(ys[i]), float(xs[i] + dx[i]), float(ys[i] + dy[i])],
            fill=tuple(colours[i].tolist()),
            width=int(widths[i]),
        )


def _draw_photographic(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    """Smooth photo-like scene: blurred shapes, vignetting, grain; sepia or grey when old."""
    s = min(h, w)
    horizon = int(h * rng.uniform(0.45, 0.75))
    img = np.concatenate(
        [
            _gradient(horizon, w, (0.75, 0.8, 0.85), (0.9, 0.9, 0.88)),
            _gradient(h - horizon, w, (0.45, 0.42, 0.38), (0.3, 0.28, 0.25)),
        ]
    )
    pil = _to_pil(img)
    draw = ImageDraw.Draw(pil)
    scene = str(rng.choice(["street", "portrait", "group", "landscape"]))
    if scene == "street":
        for _ in range(int(rng.integers(2, 7))):
            x0, bw = rng.uniform(-0.1, 0.9) * w, rng.uniform(0.1, 0.3) * w
            top = horizon - rng.uniform(0.15, 0.5) * h
            tone = int(rng.integers(60, 200))
            draw.rectangle([x0, top, x0 + bw, horizon + 5], fill=(tone, tone - 5, tone - 12))
            for wy in np.arange(top + 10, horizon - 10, 22):
                for wx in np.arange(x0 + 8, x0 + bw - 8, 20):
                    draw.rectangle([wx, wy, wx + 8, wy + 12], fill=(tone // 3,) * 3)
    if scene == "landscape":
        for _ in range(int(rng.integers(3, 10))):
            x, r = rng.uniform(0, w), s * rng.uniform(0.05, 0.15)
            y, tone = horizon - r * rng.uniform(0.5, 1.5), int(rng.integers(30, 110))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(tone, tone + 10, tone))
            draw.rectangle([x - r * 0.1, y, x + r * 0.1, horizon + r * 0.3], fill=(tone // 2,) * 3)
    counts = {"street": int(rng.integers(0, 4)), "portrait": 1, "group": int(rng.integers(2, 7))}
    n_people = counts.get(scene, int(rng.integers(0, 2)))
    for i in range(n_people):
        size = s * (0.85 if scene == "portrait" else rng.uniform(0.25, 0.5))
        x = w * ((i + 1) / (n_people + 1) + rng.uniform(-0.05, 0.05))
        base = h if scene == "portrait" else horizon + rng.uniform(0, 0.3) * (h - horizon)
        tone = int(rng.integers(20, 120))
        draw.rounded_rectangle(
            [x - size * 0.2, base - size * 0.75, x + size * 0.2, base + 5],
            radius=size * 0.1,
            fill=(tone,) * 3,
        )
        r = size * 0.11
        draw.ellipse([x - r, base - size, x + r, base - size + 2.4 * r], fill=(200, 170, 150))
    pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.2, 3.5))))
    img = _to_float(pil)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    vignette = 1 - rng.uniform(0.15, 0.5) * (yy * yy + xx * xx) / 2
    lum = _lum(img) * vignette + rng.normal(0, rng.uniform(0.01, 0.035), (h, w)).astype(np.float32)
    tone = str(rng.choice(["sepia", "black-and-white", "faded colour"], p=[0.5, 0.3, 0.2]))
    if tone == "sepia":
        img = lum[..., None] * np.array([1.08, 0.92, 0.7], np.float32) + 0.04
    elif tone == "black-and-white":
        img = np.repeat(lum[..., None], 3, axis=2)
    else:
        img = (img * vignette[..., None] * 0.8 + 0.12) * np.array([1.05, 0.95, 0.9], np.float32)
    img = 0.06 + 0.9 * img  # old prints: lifted blacks, dull whites
    return np.clip(img, 0, 1).astype(np.float32), f"a {tone} photograph of a {scene} scene"


_TILE_COLOURS = np.array(
    [
        (0.72, 0.32, 0.2),
        (0.85, 0.68, 0.3),
        (0.15, 0.22, 0.5),
        (0.92, 0.9, 0.84),
        (0.1, 0.1, 0.1),
        (0.2, 0.45, 0.35),
        (0.6, 0.12, 0.12),
        (0.45, 0.6, 0.75),
    ],
    dtype=np.float32,
)


def _draw_geometric(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    """Tiles, stripes or repeating rosettes from a small palette, computed per pixel."""
    k = int(rng.integers(3, 6))
    chosen = rng.choice(len(_TILE_COLOURS), size=k, replace=False)
    pal = _TILE_COLOURS[chosen]
    s = int(rng.integers(14, 45))
    yy, xx = np.ogrid[:h, :w]
    mode = str(rng.choice(["tiles", "stripes", "rosettes"]))
    if mode == "tiles":
        a, b = (int(v) for v in rng.integers(1, 3, 2))
        base = ((yy // s) * a + (xx // s) * b) % k
        u, v = (yy % s) / s - 0.5, (xx % s) / s - 0.5
        shape = str(rng.choice(["circles", "diamonds", "squares"]))
        inside = {"circles": u * u + v * v < 0.09, "diamonds": np.abs(u) + np.abs(v) < 0.38}.get(
            shape, np.maximum(np.abs(u), np.abs(v)) < 0.25
        )
        idx = np.where(inside, (base + 1) % k, base)
        what = f"tiles with {shape}"
    elif mode == "stripes":
        angle = float(rng.choice([0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]))
        t = xx * np.cos(angle) + yy * np.sin(angle) + 4 * s
        idx = ((t // s) % k).astype(np.int64)
        idx = np.where(t % s < 2, 4 % k, idx)
        what = "stripes"
    else:
        row = yy // s
        u = (yy % s) / s - 0.5
        v = ((xx + (row % 2) * (s // 2)) % s) / s - 0.5
        r = np.sqrt(u * u + v * v)
        petals = r < 0.3 + 0.12 * np.cos(6 * np.arctan2(u, v))
        idx = np.where(r < 0.1, 2 % k, np.where(petals, 1, 0))
        what = "rosettes"
    idx = np.broadcast_to(idx, (h, w))
    if rng.random() < 0.5:  # a border band in its own colour
        band = max(4, s // 2)
        edge = np.zeros((h, w), dtype=bool)
        edge[:band], edge[-band:], edge[:, :band], edge[:, -band:] = True, True, True, True
        idx = np.where(edge, k - 1, idx)
    img = pal[idx] * (1 + 0.04 * _noise(rng, h, w, 24))[..., None]
    names = ("terracotta", "ochre", "blue", "white", "black", "green", "red", "pale blue")
    colours = [names[i] for i in chosen[:3]]
    return np.clip(img, 0, 1).astype(
        np.float32
    ), f"a repeating pattern of {what} in {_join(colours)}"


def _draw_line_art(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    """Light paper ground with ink contours, open strokes and hatched areas."""
    paper = np.array(
        [rng.uniform(0.92, 0.97), rng.uniform(0.88, 0.94), rng.uniform(0.76, 0.88)], np.float32
    )
    ink = np.array(
        [(0.12, 0.1, 0.1), (0.3, 0.18, 0.1), (0.1, 0.12, 0.25)][int(rng.integers(3))], np.float32
    )
    s = min(h, w)
    layer = Image.new("L", (w, h))
    draw = ImageDraw.Draw(layer)
    width = int(rng.integers(1, 3))
    for _ in range(int(rng.integers(3, 8))):  # closed contours
        cx, cy, r = (
            rng.uniform(0.15, 0.85) * w,
            rng.uniform(0.15, 0.85) * h,
            s * rng.uniform(0.06, 0.25),
        )
        t = np.linspace(0, 2 * np.pi, 60)
        radius = r * (
            1 + 0.2 * np.sin(2 * t + rng.uniform(0, 6)) + 0.1 * np.sin(3 * t + rng.uniform(0, 6))
        )
        pts = np.stack(
            [cx + radius * np.cos(t) * rng.uniform(0.6, 1.4), cy + radius * np.sin(t)], 1
        )
        draw.line(pts.ravel().tolist(), fill=255, width=width, joint="curve")
    for _ in range(int(rng.integers(4, 12))):  # open strokes
        pts = _walk(
            rng,
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(0, 2 * np.pi),
            int(rng.integers(10, 50)),
            4.0,
            0.15,
        )
        draw.line(pts.ravel().tolist(), fill=255, width=width)
    for _ in range(int(rng.integers(1, 5))):  # hatched areas
        _hatch(rng, layer, s)
    alpha = np.asarray(layer, dtype=np.float32)[..., None] * np.float32(
        rng.uniform(0.75, 0.95) / 255
    )
    img = paper * (1 + 0.02 * _noise(rng, h, w, 40))[..., None]
    img = img + (ink - img) * alpha
    subject = str(
        rng.choice(
            ["a landscape sketch", "a figure study", "a botanical study", "an architectural study"]
        )
    )
    return img.astype(np.float32), f"{subject} in ink with hatching"


def _hatch(rng: np.random.Generator, layer: Image.Image, s: int) -> None:
    """Parallel (sometimes crossed) lines clipped to an ellipse, as in shading with a pen."""
    w, h = layer.size
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    rx, ry = s * rng.uniform(0.05, 0.2), s * rng.uniform(0.05, 0.2)
    box = [int(cx - rx), int(cy - ry), int(cx + rx) + 1, int(cy + ry) + 1]
    bw, bh = box[2] - box[0], box[3] - box[1]
    lines = Image.new("L", (bw, bh))
    draw = ImageDraw.Draw(lines)
    gap = float(rng.uniform(3, 6))
    for angle in [rng.uniform(0, np.pi)] + ([rng.uniform(0, np.pi)] if rng.random() < 0.4 else []):
        dx, dy = np.cos(angle), np.sin(angle)
        for off in np.arange(-bw - bh, bw + bh, gap):
            px, py = bw / 2 - dy * off, bh / 2 + dx * off
            draw.line(
                [
                    px - dx * 2 * (bw + bh),
                    py - dy * 2 * (bw + bh),
                    px + dx * 2 * (bw + bh),
                    py + dy * 2 * (bw + bh),
                ],
                fill=255,
            )
    clip = Image.new("L", (bw, bh))
    ImageDraw.Draw(clip).ellipse([0, 0, bw - 1, bh - 1], fill=255)
    layer.paste(255, box[:2], Image.fromarray(np.minimum(np.asarray(lines), np.asarray(clip))))


_CONTENT_DRAW: dict[str, Callable[[np.random.Generator, int, int], tuple[np.ndarray, str]]] = {
    "Artistic depiction": _draw_artistic,
    "Photographic depiction": _draw_photographic,
    "Geometric patterns": _draw_geometric,
    "Line art": _draw_line_art,
}
