"""How each support material looks: laid over the painted content, before damage."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from heritageseg.data.synth.canvas import _noise, _rgb255, _strokes, _to_float, _to_pil, _walk


def _tex_paper(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Paper: fine fibre noise, faint mottling and a few stray fibres."""
    h, w = img.shape[:2]
    grain = 0.025 * rng.standard_normal((h, w), dtype=np.float32) + 0.03 * _noise(rng, h, w, 60)
    fibres = [
        _walk(rng, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 6.3), 8, 2.0, 0.3)
        for _ in range(h * w // 4000)
    ]
    grain = grain - 0.05 * _strokes(h, w, fibres, 1)
    return img * (1 + grain)[..., None] * np.array([1.0, 0.99, 0.96], np.float32)


def _tex_parchment(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Parchment: yellowish cast with blotchy mottling."""
    h, w = img.shape[:2]
    mottle = 0.07 * _noise(rng, h, w, 30) + 0.04 * _noise(rng, h, w, 8)
    img = img + (np.array([0.86, 0.76, 0.55], np.float32) - img) * 0.18
    return img * (1 + mottle[..., None] * np.array([1.0, 1.1, 1.4], np.float32))


def _tex_glass(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Glass: a plate with a sheen for photographs, else stained-glass panes in lead cames."""
    h, w = img.shape[:2]
    if content == "Photographic depiction":
        yy, xx = np.ogrid[:h, :w]
        sheen = np.exp(
            -(((xx - yy * rng.uniform(0.3, 1.5)) / w - rng.uniform(-0.5, 0.5)) ** 2) / 0.02
        )
        return img * np.array([0.95, 0.98, 1.0], np.float32) + 0.08 * sheen[..., None].astype(
            np.float32
        )
    cell = float(rng.uniform(28, 60))
    ny, nx = int(h / cell) + 2, int(w / cell) + 2
    gy = (np.arange(ny)[:, None] + rng.uniform(-0.3, 0.3, (ny, nx))) * cell
    gx = (np.arange(nx)[None, :] + rng.uniform(-0.3, 0.3, (ny, nx))) * cell
    panes = Image.new("RGB", (w, h))
    lead = Image.new("L", (w, h))
    dp, dl = ImageDraw.Draw(panes), ImageDraw.Draw(lead)
    mean = img.mean((0, 1))
    for i in range(ny - 1):
        for j in range(nx - 1):
            quad = [
                (gx[i, j], gy[i, j]),
                (gx[i, j + 1], gy[i, j + 1]),
                (gx[i + 1, j + 1], gy[i + 1, j + 1]),
                (gx[i + 1, j], gy[i + 1, j]),
            ]
            y = int(np.clip((gy[i, j] + gy[i + 1, j + 1]) / 2, 0, h - 1))
            x = int(np.clip((gx[i, j] + gx[i + 1, j + 1]) / 2, 0, w - 1))
            colour = mean + (img[y, x] - mean) * 1.5 + rng.normal(0, 0.04, 3)
            dp.polygon(quad, fill=_rgb255(colour))
            dl.line([*quad, quad[0]], fill=255, width=int(rng.integers(3, 5)))
    img = img * 0.35 + _to_float(panes) * 0.65
    img = img * (1 + 0.05 * _noise(rng, h, w, 6))[..., None]
    m = np.asarray(lead) > 0
    img[m] = np.float32(0.12) + 0.03 * rng.standard_normal((int(m.sum()), 1), dtype=np.float32)
    return img


def _tex_tesserae(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Mosaic: the art resampled into small jittered stones set in grout."""
    h, w = img.shape[:2]
    s = int(rng.integers(6, 13))
    g = 1 + int(s > 9)
    yy, xx = np.ogrid[:h, :w]
    row = yy // s
    offset = (row % 2) * (s // 2) if rng.random() < 0.6 else 0 * row
    col = (xx + offset) // s
    ty = np.clip(row * s + s // 2, 0, h - 1)
    tx = np.clip(col * s - offset + s // 2, 0, w - 1)
    tiles = img[np.broadcast_to(ty, (h, w)), np.broadcast_to(tx, (h, w))]
    jitter = rng.normal(0, 0.05, (h // s + 2, w // s + 3, 3)).astype(np.float32)
    tiles = tiles + jitter[np.broadcast_to(row, (h, w)), np.broadcast_to(col, (h, w))]
    grout = ((yy % s) < g) | (((xx + offset) % s) < g)
    grout_colour = np.array([0.62, 0.6, 0.55], np.float32) * rng.uniform(0.7, 1.1)
    return np.where(grout[..., None], grout_colour, tiles)


def _tex_wood(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Wooden panel: warped grain stripes showing through, and a yellowed varnish."""
    h, w = img.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    along = xx if rng.random() < 0.7 else yy
    grain = np.sin(along / rng.uniform(2, 4) + 1.5 * _noise(rng, h, w, 60))
    img = img * (0.97 + 0.03 * grain)[..., None]
    return img + (np.array([0.6, 0.45, 0.2], np.float32) - img) * 0.1


def _tex_canvas(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Canvas: a fine regular weave under the paint and a warm varnish."""
    h, w = img.shape[:2]
    p = rng.uniform(3, 5)
    yy, xx = np.ogrid[:h, :w]
    weave = (np.sin(2 * np.pi * xx / p) + np.sin(2 * np.pi * yy / p)).astype(np.float32)
    img = img * (1 + 0.04 * weave)[..., None]
    return img + (np.array([0.6, 0.5, 0.3], np.float32) - img) * 0.08


def _tex_lime_plaster(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Fresco: matte, paler colours on a rough, mottled plaster."""
    h, w = img.shape[:2]
    img = img + (np.array([0.85, 0.82, 0.75], np.float32) - img) * 0.25
    rough = 0.035 * rng.standard_normal((h, w), dtype=np.float32) + 0.05 * _noise(rng, h, w, 25)
    return img * (1 + rough)[..., None]


def _tex_film(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Film emulsion: coarse grain and a colour cast of aged dyes."""
    h, w = img.shape[:2]
    grain = rng.uniform(0.03, 0.06) * rng.standard_normal((h, w), dtype=np.float32)
    cast = np.array(
        [(1.0, 1.0, 1.0), (1.05, 0.9, 1.0), (1.06, 0.98, 0.85)][int(rng.integers(3))], np.float32
    )
    return (img + grain[..., None]) * cast


def _tex_textile(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Textile: visible warp and weft threads, soft fuzzy colours."""
    h, w = img.shape[:2]
    p = int(rng.integers(3, 6))
    yy, xx = np.ogrid[:h, :w]
    over = ((yy // p + xx // p) % 2).astype(np.float32)
    thread = np.where(
        over > 0, np.cos(np.pi * ((xx % p) / p - 0.5)), np.cos(np.pi * ((yy % p) / p - 0.5))
    )
    img = _to_float(_to_pil(img).filter(ImageFilter.GaussianBlur(0.8)))
    img = img * (0.82 + 0.18 * thread.astype(np.float32))[..., None]
    return img * (1 + 0.04 * rng.standard_normal((h, w), dtype=np.float32))[..., None]


def _tex_ceramic(rng: np.random.Generator, img: np.ndarray, content: str) -> np.ndarray:
    """Glazed ceramic: richer colour, a soft specular sheen and tile joints."""
    h, w = img.shape[:2]
    mean = img.mean(2, keepdims=True)
    img = mean + (img - mean) * 1.15
    yy, xx = np.ogrid[:h, :w]
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), min(h, w) * rng.uniform(0.2, 0.4)
    sheen = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)).astype(np.float32)
    img = img + 0.18 * sheen[..., None]
    if rng.random() < 0.6:
        t = int(rng.integers(90, 160))
        joint = (yy % t < 2) | (xx % t < 2)
        img = np.where(joint[..., None], np.float32(0.8), img)
    return img


_MATERIAL_DRAW: dict[str, Callable[[np.random.Generator, np.ndarray, str], np.ndarray]] = {
    "Paper": _tex_paper,
    "Parchment": _tex_parchment,
    "Glass": _tex_glass,
    "Tesserae": _tex_tesserae,
    "Wood": _tex_wood,
    "Canvas": _tex_canvas,
    "Lime plaster": _tex_lime_plaster,
    "Film emulsion": _tex_film,
    "Textile": _tex_textile,
    "Ceramic": _tex_ceramic,
}
