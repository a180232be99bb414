"""Deterministic synthetic artworks with damage masks in the ARTeFACT label scheme.

The real dataset cannot be downloaded here, so every stage is exercised on generated records
in exactly its format. They are meant to be learnable, not merely well-typed: each damage
class has its own look, is drawn into the pixels and the mask together, and is labelled only
where it visibly changes the image, so a small model trained on them learns real distinctions
between classes. Contents, materials and class frequencies are skewed like the published data.

All randomness of sample ``i`` comes from ``np.random.default_rng([seed, i])``: samples can be
made in any order and in parallel, and sample ``i`` does not depend on how many are made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from heritageseg.core.classes import BACKGROUND_ID, CLASS_NAMES

MATERIALS: tuple[str, ...] = (
    "Paper",
    "Parchment",
    "Glass",
    "Tesserae",
    "Wood",
    "Canvas",
    "Lime plaster",
    "Film emulsion",
    "Textile",
    "Ceramic",
)
CONTENTS: tuple[str, ...] = (
    "Artistic depiction",
    "Photographic depiction",
    "Geometric patterns",
    "Line art",
)

# Real counts are 232/130/32/23; the small contents are boosted so 200 images hold each often.
_CONTENT_P = (0.45, 0.30, 0.13, 0.12)
# Material given content: overall shares come out near the published 186/42/39/30/26/23/23/22.
_MATERIAL_P: dict[str, dict[str, float]] = {
    "Artistic depiction": {
        "Paper": 0.24,
        "Parchment": 0.17,
        "Wood": 0.13,
        "Canvas": 0.13,
        "Lime plaster": 0.13,
        "Glass": 0.08,
        "Textile": 0.06,
        "Ceramic": 0.03,
        "Tesserae": 0.03,
    },
    "Photographic depiction": {"Paper": 0.72, "Film emulsion": 0.20, "Glass": 0.08},
    "Geometric patterns": {
        "Tesserae": 0.45,
        "Ceramic": 0.20,
        "Glass": 0.15,
        "Textile": 0.15,
        "Paper": 0.05,
    },
    "Line art": {"Paper": 0.65, "Parchment": 0.25, "Textile": 0.10},
}
_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "Paper": {
        "Artistic depiction": ("Watercolour", "Print", "Painting on paper"),
        "Photographic depiction": ("Photo", "Photographic print"),
        "Geometric patterns": ("Print", "Wallpaper"),
        "Line art": ("Drawing", "Engraving", "Map"),
    },
    "Parchment": {
        "Artistic depiction": ("Manuscript miniature", "Illuminated manuscript"),
        "*": ("Manuscript", "Drawing"),
    },
    "Glass": {
        "Photographic depiction": ("Glass plate negative", "Lantern slide"),
        "*": ("Stained glass",),
    },
    "Tesserae": {"*": ("Mosaic",)},
    "Wood": {"*": ("Panel painting", "Icon")},
    "Canvas": {"*": ("Painting", "Oil painting")},
    "Lime plaster": {"*": ("Fresco", "Mural")},
    "Film emulsion": {"*": ("Film still", "Film frame")},
    "Textile": {
        "Geometric patterns": ("Carpet", "Tapestry"),
        "Line art": ("Embroidery", "Sampler"),
        "*": ("Tapestry", "Embroidery"),
    },
    "Ceramic": {"*": ("Tile", "Pottery")},
}

# Colours a loss exposes (support, ground, backing); the one least like the art is used.
_LOSS_COLOURS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "Paper": ((0.95, 0.93, 0.86), (0.28, 0.25, 0.22)),
    "Parchment": ((0.86, 0.76, 0.56), (0.3, 0.26, 0.2)),
    "Glass": ((0.14, 0.16, 0.2), (0.88, 0.92, 0.95)),
    "Tesserae": ((0.74, 0.7, 0.62), (0.5, 0.46, 0.4)),
    "Wood": ((0.93, 0.91, 0.85), (0.6, 0.43, 0.26)),
    "Canvas": ((0.8, 0.72, 0.56), (0.94, 0.92, 0.86)),
    "Lime plaster": ((0.9, 0.87, 0.8), (0.72, 0.46, 0.36)),
    "Film emulsion": ((0.95, 0.95, 0.92), (0.05, 0.05, 0.06)),
    "Textile": ((0.72, 0.66, 0.55), (0.25, 0.22, 0.2)),
    "Ceramic": ((0.8, 0.56, 0.4), (0.93, 0.91, 0.87)),
}

# Damage draw order: later damage covers earlier damage (exposure, deposits, breaks, additions).
_ORDER = (15, 10, 6, 8, 11, 9, 2, 1, 7, 4, 12, 14, 13, 3, 5)
# Relative chance of each damage class 1..15 being among an image's damage types.
_BASE_WEIGHT = np.array(
    [1.0, 0.7, 0.5, 0.5, 0.25, 0.8, 0.4, 0.6, 1.0, 1.0, 0.3, 0.25, 0.25, 0.2, 0.3]
)
_MATERIAL_WEIGHT: dict[str, dict[int, float]] = {
    "Paper": {8: 2.0, 11: 2.5, 12: 2.0, 7: 2.0, 13: 1.5, 14: 1.5, 2: 0.5, 9: 0.5},
    "Parchment": {8: 2.0, 11: 1.5, 7: 1.5, 2: 1.2, 9: 0.8},
    "Glass": {9: 2.0, 4: 1.5, 6: 1.5, 8: 0.3, 7: 0.0, 11: 0.2, 12: 0.5, 13: 0.0, 14: 0.3},
    "Tesserae": {1: 2.0, 9: 1.5, 6: 1.5, 7: 0.0, 8: 0.2, 11: 0.0, 12: 0.3, 13: 0.0, 5: 0.3},
    "Wood": {9: 2.0, 2: 2.0, 1: 1.5, 7: 0.0, 11: 0.3},
    "Canvas": {9: 2.0, 2: 1.5, 7: 0.5, 13: 1.5},
    "Lime plaster": {1: 2.0, 9: 2.0, 10: 1.5, 6: 1.5, 2: 1.5, 7: 0.0, 11: 0.0, 12: 0.0, 13: 0.3},
    "Film emulsion": {4: 3.0, 3: 3.0, 5: 3.0, 15: 5.0, 9: 0.5, 11: 0.3, 8: 0.5},
    "Textile": {10: 1.5, 6: 1.5, 1: 1.5, 13: 1.5, 9: 0.2, 2: 0.2, 7: 1.5},
    "Ceramic": {9: 2.0, 1: 2.0, 6: 1.2, 7: 0.0, 8: 0.5, 13: 0.0},
}
_CONTENT_WEIGHT: dict[str, dict[int, float]] = {
    "Photographic depiction": {15: 3.0, 3: 1.5, 4: 1.5, 5: 1.5},
}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class SynthSample:
    """One generated record, with the fields of a published ARTeFACT row."""

    id: str
    image: np.ndarray
    annotation: np.ndarray
    material: str
    content: str
    type: str
    damage_description: str
    llava_description: str
    verified_description: str


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


# ---------------------------------------------------------------- public API


def generate_sample(
    index: int,
    seed: int = 0,
    min_size: int = 256,
    max_size: int = 512,
    background_fraction: float = 0.3,
) -> SynthSample:
    """Sample `index` of the synthetic set `seed`: the same arguments give identical data."""
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")
    if not 0.0 <= background_fraction <= 1.0:
        raise ValueError(f"background_fraction must be in [0, 1], got {background_fraction}")
    # Separate streams, so e.g. background_fraction does not change the artwork itself.
    r_meta, r_art, r_bg, r_dmg = np.random.default_rng([seed, index]).spawn(4)
    h, w = (int(v) for v in r_meta.integers(min_size, max_size + 1, size=2))
    content = CONTENTS[int(r_meta.choice(len(CONTENTS), p=_CONTENT_P))]
    options = _MATERIAL_P[content]
    material = str(r_meta.choice(list(options), p=list(options.values())))
    types = _TYPES[material].get(content) or _TYPES[material]["*"]
    kind = str(types[int(r_meta.integers(len(types)))])

    img, subject = _CONTENT_DRAW[content](r_art, h, w)
    img = np.clip(_MATERIAL_DRAW[material](r_art, img, content), 0, 1).astype(np.float32)
    has_bg = r_bg.random() < background_fraction
    art = _artwork_region(r_bg, h, w) if has_bg else np.ones((h, w), dtype=bool)
    loss = _far_colour(np.array(_LOSS_COLOURS[material], np.float32), img[art].mean(0))
    canvas = _Canvas(img, np.zeros((h, w), np.uint8), art, loss)
    for cid in _pick_damages(r_dmg, material, content):
        _DAMAGE_DRAW[cid](r_dmg, canvas)
    backdrop = ""
    if has_bg:
        backdrop = _paint_backdrop(r_bg, canvas)
    image = np.clip(canvas.img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    damage = _describe_damage(canvas.mask)
    caption = f"{_article(kind)} {kind.lower()} on {material.lower()} showing {subject}."
    if backdrop:
        caption += f" It is photographed against a {backdrop} background."
    return SynthSample(
        id=_sample_id(seed, index),
        image=image,
        annotation=canvas.mask,
        material=material,
        content=content,
        type=kind,
        damage_description=damage,
        llava_description=caption,
        verified_description=damage,
    )


def iter_samples(
    n: int,
    seed: int = 0,
    min_size: int = 256,
    max_size: int = 512,
    background_fraction: float = 0.3,
) -> Iterator[SynthSample]:
    """Samples 0..n-1 of the set `seed`, one at a time (memory stays flat)."""
    for i in range(n):
        yield generate_sample(i, seed, min_size, max_size, background_fraction)


# ---------------------------------------------------------------- metadata


def _sample_id(seed: int, index: int) -> str:
    """A cuid-like id (``c`` + 24 base-36 chars) from a hash: stable and unique per sample."""
    digest = hashlib.blake2b(f"synth:{seed}:{index}".encode(), digest_size=16).digest()
    value = int.from_bytes(digest, "big")
    digits = []
    for _ in range(24):
        value, d = divmod(value, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[d])
    return "c" + "".join(digits)


def _pick_damages(rng: np.random.Generator, material: str, content: str) -> list[int]:
    """2-6 damage types, weighted by what this material and content typically suffer."""
    weight = _BASE_WEIGHT.copy()
    for table in (_MATERIAL_WEIGHT.get(material, {}), _CONTENT_WEIGHT.get(content, {})):
        for cid, factor in table.items():
            weight[cid - 1] *= factor
    k = min(int(rng.integers(2, 7)), int(np.count_nonzero(weight)))
    chosen = set((rng.choice(15, size=k, replace=False, p=weight / weight.sum()) + 1).tolist())
    return [cid for cid in _ORDER if cid in chosen]


_PHRASES = {
    "Material loss": "material loss",
    "Peel": "peeling of the surface layer",
    "Dust": "dust specks",
    "Scratch": "scratches",
    "Hair": "a stray hair",
    "Dirt": "dirt",
    "Fold": "a fold",
    "Writing": "handwritten writing",
    "Cracks": "cracks",
    "Staining": "staining",
    "Stamp": "an ink stamp",
    "Sticker": "a sticker",
    "Puncture": "small punctures",
    "Burn marks": "burn marks",
    "Lightleak": "a light leak",
}


def _describe_damage(mask: np.ndarray) -> str:
    """Names the damage actually left in the mask, grouped by where it lies."""
    counts = np.bincount(mask.ravel(), minlength=256)[1:16]
    groups: dict[str, list[str]] = {}
    for cid in np.argsort(-counts, kind="stable") + 1:
        if counts[cid - 1] == 0:
            break
        ys, xs = np.nonzero(mask == cid)
        where = _location(ys, xs, *mask.shape)
        groups.setdefault(where, []).append(_PHRASES[CLASS_NAMES[cid]])
    if not groups:
        return "No visible damage."
    parts = [f"{_join(names)} {where}" for where, names in groups.items()]
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _location(ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> str:
    wide = (xs.max() - xs.min()) > 0.6 * w
    tall = (ys.max() - ys.min()) > 0.6 * h
    row = ("upper", "middle", "lower")[min(2, int(3 * ys.mean() / h))]
    col = ("left", "centre", "right")[min(2, int(3 * xs.mean() / w))]
    if wide and tall:
        return "across the image"
    if wide:
        return "across the middle" if row == "middle" else f"across the {row} half"
    if tall:
        return "down the centre" if col == "centre" else f"along the {col} side"
    if row == "middle":
        return "in the centre" if col == "centre" else f"on the {col}"
    return (
        f"at the {('top', 'bottom')[row == 'lower']}" if col == "centre" else f"in the {row} {col}"
    )


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _article(word: str) -> str:
    return "An" if word[0].lower() in "aeiou" else "A"


# ---------------------------------------------------------------- helpers


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


def _strokes(h: int, w: int, lines: list[np.ndarray], width: int) -> np.ndarray:
    """Boolean mask of polylines ((N, 2) x, y arrays) drawn `width` px wide."""
    im = Image.new("L", (w, h))
    draw = ImageDraw.Draw(im)
    for pts in lines:
        if len(pts) > 1:
            draw.line(pts.ravel().tolist(), fill=255, width=width, joint="curve")
    return np.asarray(im) > 0


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`a` moved by (dy, dx) pixels, edges repeated (np.roll would wrap them around)."""
    h, w = a.shape[:2]
    pad = ((abs(dy), abs(dy)), (abs(dx), abs(dx))) + ((0, 0),) * (a.ndim - 2)
    big = np.pad(a, pad, mode="edge")
    return big[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def _walk(
    rng: np.random.Generator, x: float, y: float, angle: float, n: int, step: float, turn: float
) -> np.ndarray:
    """A smooth random walk of n steps: the path of a crack, hair or pen."""
    a = angle + np.cumsum(rng.normal(0.0, turn, n))
    xs = x + np.concatenate([[0.0], np.cumsum(step * np.cos(a))])
    ys = y + np.concatenate([[0.0], np.cumsum(step * np.sin(a))])
    return np.stack([xs, ys], 1)


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font: identical on every install, no files needed."""
    # Pillow >= 10.1 names it load_default_imagefont; before, load_default returned it.
    return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()


def _random_text(rng: np.random.Generator, n: int, alphabet: str) -> str:
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=n))


# ---------------------------------------------------------------- base artworks


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


# ---------------------------------------------------------------- material textures


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


# ---------------------------------------------------------------- background


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


# ---------------------------------------------------------------- damage


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
