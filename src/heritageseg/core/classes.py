"""The 16 ARTeFACT classes: published ids, names and colours, and the class hierarchy.

Ids and colours are those of the published `annotation` / `annotation_rgb` columns
(Ivanova et al., WACV 2025). Background (255) marks pixels outside the artwork: it is an
ignore label for losses and metrics, never a class.

Hierarchy for multi-task heads (binary 2 / coarse 4 / fine 16), grouped by what happened to
the object, which is also what a conservator treats differently:

- coarse 0 ``Clean``: no damage.
- coarse 1 ``Structural``: the support or paint layer is broken, deformed or gone —
  Material loss, Peel, Scratch, Fold, Cracks, Puncture, Burn marks.
- coarse 2 ``Deposit and discolouration``: something lies on or alters the surface without
  breaking it — Dust, Hair, Dirt, Staining, Lightleak.
- coarse 3 ``Addition``: marks people added to the object — Writing, Stamp, Sticker.

Binary: 0 = Clean, 1 = any damage. Background stays 255 at every level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND_ID = 255
BACKGROUND_COLOUR = "#5A0007"
NUM_CLASSES = 16
OVERLAY_ALPHA = 0.5  # opacity of the class colours over a scan; Clean pixels are left as they are
VALID_LABELS = frozenset([*range(NUM_CLASSES), BACKGROUND_ID])


@dataclass(frozen=True)
class DamageClass:
    id: int
    name: str
    colour: str  # "#RRGGBB" as in annotation_rgb
    coarse: int

    @property
    def rgb(self) -> tuple[int, int, int]:
        return hex_to_rgb(self.colour)

    @property
    def is_damage(self) -> bool:
        return self.id != 0


COARSE_NAMES = ("Clean", "Structural", "Deposit and discolouration", "Addition")
BINARY_NAMES = ("Clean", "Damage")

CLASSES: tuple[DamageClass, ...] = (
    DamageClass(0, "Clean", "#000000", 0),
    DamageClass(1, "Material loss", "#1CE6FF", 1),
    DamageClass(2, "Peel", "#FF34FF", 1),
    DamageClass(3, "Dust", "#FF4A46", 2),
    DamageClass(4, "Scratch", "#008941", 1),
    DamageClass(5, "Hair", "#006FA6", 2),
    DamageClass(6, "Dirt", "#A30059", 2),
    DamageClass(7, "Fold", "#FFA500", 1),
    DamageClass(8, "Writing", "#7A4900", 3),
    DamageClass(9, "Cracks", "#0000A6", 1),
    DamageClass(10, "Staining", "#63FFAC", 2),
    DamageClass(11, "Stamp", "#004D43", 3),
    DamageClass(12, "Sticker", "#8FB0FF", 3),
    DamageClass(13, "Puncture", "#997D87", 1),
    DamageClass(14, "Burn marks", "#809693", 1),
    DamageClass(15, "Lightleak", "#F6FF1B", 2),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
DAMAGE_IDS: tuple[int, ...] = tuple(c.id for c in CLASSES if c.is_damage)


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def class_id(name: str) -> int:
    """Id of a class by its published name (case-insensitive)."""
    for c in CLASSES:
        if c.name.lower() == name.lower():
            return c.id
    raise KeyError(f"unknown class {name!r}; valid names: {', '.join(CLASS_NAMES)}")


def palette() -> np.ndarray:
    """A 256x3 uint8 lookup table: label id -> published colour (unused ids black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for c in CLASSES:
        lut[c.id] = c.rgb
    lut[BACKGROUND_ID] = hex_to_rgb(BACKGROUND_COLOUR)
    return lut


def colourise(mask: np.ndarray) -> np.ndarray:
    """Label mask (H, W) -> annotation_rgb image (H, W, 3) in the published colours."""
    return palette()[mask]


def _level_lut(level_of: dict[int, int]) -> np.ndarray:
    lut = np.full(256, BACKGROUND_ID, dtype=np.uint8)
    for fine, coarse in level_of.items():
        lut[fine] = coarse
    return lut


COARSE_LUT = _level_lut({c.id: c.coarse for c in CLASSES})
BINARY_LUT = _level_lut({c.id: int(c.is_damage) for c in CLASSES})


def to_coarse(mask: np.ndarray) -> np.ndarray:
    """Fine labels -> coarse labels (0..3), Background kept as 255."""
    return COARSE_LUT[mask]


def to_binary(mask: np.ndarray) -> np.ndarray:
    """Fine labels -> clean (0) / damage (1), Background kept as 255."""
    return BINARY_LUT[mask]
