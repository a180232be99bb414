"""The published classes, colours and the hierarchy for multi-task heads."""

from __future__ import annotations

import numpy as np

from heritageseg.core import classes

PUBLISHED = {
    0: ("Clean", "#000000"),
    1: ("Material loss", "#1CE6FF"),
    2: ("Peel", "#FF34FF"),
    3: ("Dust", "#FF4A46"),
    4: ("Scratch", "#008941"),
    5: ("Hair", "#006FA6"),
    6: ("Dirt", "#A30059"),
    7: ("Fold", "#FFA500"),
    8: ("Writing", "#7A4900"),
    9: ("Cracks", "#0000A6"),
    10: ("Staining", "#63FFAC"),
    11: ("Stamp", "#004D43"),
    12: ("Sticker", "#8FB0FF"),
    13: ("Puncture", "#997D87"),
    14: ("Burn marks", "#809693"),
    15: ("Lightleak", "#F6FF1B"),
}


def test_ids_names_and_colours_are_the_published_ones():
    assert classes.NUM_CLASSES == 16
    assert {c.id: (c.name, c.colour) for c in classes.CLASSES} == PUBLISHED
    assert classes.BACKGROUND_ID == 255
    assert classes.BACKGROUND_COLOUR == "#5A0007"


def test_colourise_uses_the_published_colours():
    mask = np.array([[0, 9, 255]], dtype=np.uint8)
    rgb = classes.colourise(mask)
    assert rgb.tolist() == [[[0, 0, 0], [0, 0, 166], [90, 0, 7]]]


def test_hierarchy_keeps_background_and_groups_every_class():
    fine = np.array([*range(16), 255], dtype=np.uint8)
    coarse = classes.to_coarse(fine)
    binary = classes.to_binary(fine)
    assert coarse[0] == 0 and binary[0] == 0
    assert coarse[-1] == 255 and binary[-1] == 255
    assert set(coarse[1:16].tolist()) == {1, 2, 3}
    assert binary[1:16].tolist() == [1] * 15
    assert len(classes.COARSE_NAMES) == 4
    names = {classes.CLASS_NAMES[i]: classes.COARSE_NAMES[coarse[i]] for i in range(16)}
    assert names["Cracks"] == "Structural"
    assert names["Hair"] == "Deposit and discolouration"
    assert names["Stamp"] == "Addition"


def test_class_id_lookup_lists_valid_names_on_error():
    assert classes.class_id("burn MARKS") == 14
    try:
        classes.class_id("Mould")
    except KeyError as error:
        assert "Lightleak" in str(error)
    else:
        raise AssertionError("unknown class accepted")
