"""The artwork's outline and the backdrop around it, which is labelled Background."""

from __future__ import annotations

import numpy as np

from heritageseg.core.classes import BACKGROUND_ID
from heritageseg.data.synth.canvas import _Canvas, _noise


def _artwork_region(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Where the artwork is: margins, an arched top, an oval or a torn fragment outline."""
    mode = str(rng.choice(["margins", "arch", "oval", "fragment"], p=[0.55, 0.15, 0.12, 0.18]))
    yy, xx = np.ogrid[:h, :w]
    margins = rng.uniform(0.03, 0.15, 4) * (rng.random(4) < 0.7)
    if not margins.any():
        margins[int(rng.integers(4))] = rng.uniform(0.03, 0.15)
    top, bottom, left, right = margins * np.array([h, h, w, w])
    art = (yy >= top) & (yy < h - bottom) & (xx >= left) & (xx < w - right)
    if mode == "arch":
        cx, r = (left + w - right) / 2, (w - left - right) / 2
        spring = top + r
        art &= (yy >= spring) | ((yy - spring) ** 2 + (xx - cx) ** 2 <= r * r)
    elif mode == "oval":
        cy, cx = (top + h - bottom) / 2, (left + w - right) / 2
        ry, rx = (h - top - bottom) / 2, (w - left - right) / 2
        art = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    elif mode == "fragment":
        f = np.sqrt(((yy - h / 2) / (0.47 * h)) ** 2 + ((xx - w / 2) / (0.47 * w)) ** 2)
        art = f + 0.12 * _noise(rng, h, w, min(h, w) / 8) + 0.04 * _noise(rng, h, w, 4) < 1
    if art.mean() < 0.4 or art.all():
        art = np.zeros((h, w), dtype=bool)
        art[int(h * 0.08) : h - int(h * 0.05), int(w * 0.06) :] = True
    return art


def _paint_backdrop(rng: np.random.Generator, c: _Canvas) -> str:
    """Scanner bed, mount or studio backdrop outside the artwork, labelled Background."""
    names = ("black", "dark grey", "grey", "white")
    k = int(rng.integers(len(names)))
    level = (0.05, 0.2, 0.5, 0.93)[k]
    bg = (
        level
        + 0.03 * _noise(rng, c.h, c.w, 80)
        + 0.012 * rng.standard_normal((c.h, c.w), dtype=np.float32)
    )
    tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.02, 3)
    outside = ~c.art
    c.img[outside] = np.clip(bg[outside, None] * tint.astype(np.float32), 0, 1)
    c.mask[outside] = BACKGROUND_ID
    return names[k]
