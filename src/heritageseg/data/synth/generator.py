"""Sample ``i`` of set ``seed``: metadata, content, material, damage and backdrop, in that order.

The tables here skew contents, materials and object types like the published data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heritageseg.data.synth.artworks import _CONTENT_DRAW
from heritageseg.data.synth.background import _artwork_region, _paint_backdrop
from heritageseg.data.synth.canvas import _Canvas, _far_colour
from heritageseg.data.synth.damage import _DAMAGE_DRAW
from heritageseg.data.synth.metadata import _article, _describe_damage, _pick_damages, _sample_id
from heritageseg.data.synth.textures import _MATERIAL_DRAW

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
