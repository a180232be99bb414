"""Which damage an image gets, and the ids and descriptions of a published record."""

from __future__ import annotations

import hashlib

import numpy as np

from heritageseg.core.classes import CLASS_NAMES

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
