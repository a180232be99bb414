"""The canvas being damaged and the pixel primitives that artworks, textures and damage share.

Randomness comes only from the generator a caller passes in, so sample ``i`` stays reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class _Canvas:
    """The artwork being damaged: pixels and labels are always changed together."""

    img: np.ndarray  # float32 (H, W, 3) in [0, 1]
    mask: np.ndarray  # uint8 (H, W)
    art: np.ndarray  # bool (H, W): inside the artwork
    loss: np.ndarray  # float32 (3,): what a loss of material exposes

    @property
    def h(self) -> int:
        return self.img.shape[0]

    @property
    def w(self) -> int:
        return self.img.shape[1]

    @property
    def size(self) -> int:
        return min(self.h, self.w)

    def point(self, rng: np.random.Generator) -> tuple[float, float]:
        """A random pixel inside the artwork, so damage lands where it is kept."""
        for _ in range(30):
            y, x = int(rng.integers(self.h)), int(rng.integers(self.w))
            if self.art[y, x]:
                return float(y), float(x)
        ys, xs = np.nonzero(self.art)
        i = int(rng.integers(len(ys)))
        return float(ys[i]), float(xs[i])


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise (about unit scale) with features about `cell` px wide."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    small = rng.standard_normal((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def _lum(px: np.ndarray) -> np.ndarray:
    return px @ _LUMA


def _far_colour(candidates: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The candidate least like `ref`: damage must stand out from what it covers."""
    return candidates[int(np.argmax(np.abs(candidates - ref).sum(1)))]


def _to_float(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) * np.float32(1 / 255)


def _to_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _rgb255(colour: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(v * 255.0, 0, 255)) for v in colour)
    return r, g, b


def _strokes(h: int, w: int, lines: list[np.ndarray], width: int) -> np.ndarray:
    """Boolean mask of polylines ((N, 2) x, y arrays) drawn `width` px wide."""
    im = Image.new("L", (w, h))
    draw = ImageDraw.Draw(im)
    for pts in lines:
        if len(pts) > 1:
            draw.line(pts.ravel().tolist(), fill=255, width=width, joint="curve")
    return np.asarray(im) > 0


def _walk(
    rng: np.random.Generator, x: float, y: float, angle: float, n: int, step: float, turn: float
) -> np.ndarray:
    """A smooth random walk of n steps: the path of a crack, hair or pen."""
    a = angle + np.cumsum(rng.normal(0.0, turn, n))
    xs = x + np.concatenate([[0.0], np.cumsum(step * np.cos(a))])
    ys = y + np.concatenate([[0.0], np.cumsum(step * np.sin(a))])
    return np.stack([xs, ys], 1)
