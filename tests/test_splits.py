"""Splits: grouped so no artwork crosses splits, stratified, deterministic, leak-checked."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from heritageseg.core.config import SplitConfig
from heritageseg.core.errors import DataError
from heritageseg.data import splits
from heritageseg.data.artefact import read_metadata
from heritageseg.data.splits import (
    SPLITS,
    SplitResult,
    check_no_leakage,
    group_id,
    leave_one_out_folds,
    make_splits,
    write_splits,
)

CONTENTS = ("Artistic depiction", "Photographic depiction", "Geometric patterns", "Line art")
MATERIALS = ("Paper", "Glass", "Wood")
SPLIT_HEADER = "id,split,material,content"
SEVENTY_FIFTEEN = {"train": 0.70, "val": 0.15, "test": 0.15}  # 40 artworks: 28, 6, 6


def _ratios(cfg: SplitConfig) -> tuple[float, float, float]:
    return cfg.train, cfg.val, cfg.test


def artworks(n: int = 40) -> pd.DataFrame:
    """Artworks with the reference's augmented copies `<id>_aug1..3`, every fifth also
    with tiles and a crop; the `artwork` column says which source each row comes from."""
    rows = []
    for i in range(n):
        base = f"art{i:03d}"
        copies = [base] + [f"{base}_aug{k}" for k in (1, 2, 3)]
        if i % 5 == 0:
            copies += [f"{base}_tile_0_384", f"{base}#tile_384_0", f"{base}_crop12"]
        content, material = CONTENTS[i % 4], MATERIALS[i % 3]
        rows += [
            {"id": c, "material": material, "content": content, "artwork": base} for c in copies
        ]
    return pd.DataFrame(rows)


def flat(n: int, content: str = "Line art", material: str = "Paper") -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(n)], "material": material, "content": content}
    )


@pytest.fixture(scope="module")
def meta(synthetic_raw) -> pd.DataFrame:
    return read_metadata(synthetic_raw)


# ---------------------------------------------------------------- groups and leakage


@pytest.mark.parametrize(
    ("record_id", "expected"),
    [
        ("cljmrkz5n341f07clcujw105j", "cljmrkz5n341f07clcujw105j"),
        ("abc_aug3", "abc"),
        ("abc_crop12", "abc"),
        ("abc_tile_0_384", "abc"),
        ("abc#tile_0_384", "abc"),
        ("abc_patch_3_4", "abc"),
        ("abc-AUG2", "abc"),
        ("abc_crop2_aug1", "abc"),
        ("abc_aug1#tile_0_384", "abc"),
        ("my_augusta", "my_augusta"),
        ("crop_top", "crop_top"),
        ("_aug1", "_aug1"),
    ],
)
def test_group_id_strips_derived_copy_suffixes(record_id, expected):
    assert group_id(record_id) == expected


def test_synthetic_split_has_every_id_once_and_no_group_in_two_splits(meta):
    split = make_splits(meta, SplitConfig())
    assert list(split.columns) == ["id", "split", "material", "content"]
    assert split["id"].tolist() == meta["id"].tolist()
    assert split["material"].tolist() == meta["material"].tolist()
    assert split["content"].tolist() == meta["content"].tolist()
    assert set(split["split"]) == set(SPLITS)
    check_no_leakage(split)


@pytest.mark.parametrize("seed", range(5))
def test_augmented_copies_and_tiles_of_one_artwork_share_a_split(seed):
    frame = artworks()
    split = make_splits(frame.drop(columns="artwork"), SplitConfig(**SEVENTY_FIFTEEN, seed=seed))
    per_artwork = split.assign(artwork=frame["artwork"]).groupby("artwork")["split"].nunique()
    assert (per_artwork == 1).all()
    groups = split.assign(artwork=frame["artwork"]).drop_duplicates("artwork")
    assert groups["split"].value_counts().to_dict() == {"train": 28, "val": 6, "test": 6}
    check_no_leakage(split)


def test_the_references_per_id_random_split_is_caught():
    frame = artworks()
    rng = np.random.default_rng(0)
    leaky = frame.assign(split=rng.choice(SPLITS, size=len(frame), p=[0.7, 0.15, 0.15]))
    with pytest.raises(DataError, match=r"group\(s\) in more than one split"):
        check_no_leakage(leaky)


def test_leak_names_the_group_and_its_splits():
    assignment = pd.DataFrame(
        {
            "id": ["art1", "art1_aug1", "art1_aug2", "art2", "art2_aug1"],
            "split": ["train", "train", "val", "test", "test"],
        }
    )
    with pytest.raises(DataError, match=r"1 group\(s\).*'art1' in train, val") as error:
        check_no_leakage(assignment)
    assert "art2" not in str(error.value)
    check_no_leakage(assignment.assign(split="train"))


def test_leak_in_folds_and_duplicate_ids_are_named():
    folds = pd.DataFrame({"id": ["a#tile_0_0", "a#tile_0_384"], "fold": ["Paper", "Glass"]})
    with pytest.raises(DataError, match=r"'a' in Glass, Paper"):
        check_no_leakage(folds, column="fold")
    twice = pd.DataFrame({"id": ["b", "c", "b"], "split": ["train", "val", "train"]})
    with pytest.raises(DataError, match=r"1 duplicate id\(s\): 'b'"):
        check_no_leakage(twice)
    with pytest.raises(DataError, match="missing column"):
        check_no_leakage(twice, column="fold")


def test_many_leaks_are_listed_up_to_ten():
    ids = [f"g{i}_aug{k}" for i in range(25) for k in (1, 2)]
    assignment = pd.DataFrame({"id": ids, "split": ["train", "val"] * 25})
    with pytest.raises(DataError, match="25 group") as error:
        check_no_leakage(assignment)
    assert len(re.findall(r"'g\d+' in train, val", str(error.value))) == 10
    assert "15 more" in str(error.value)


# ---------------------------------------------------------------- ratios and strata


def test_synthetic_counts_follow_the_ratios(meta):
    cfg = SplitConfig()
    counts = make_splits(meta, cfg)["split"].value_counts()
    for name, ratio in zip(SPLITS, _ratios(cfg), strict=True):
        assert abs(counts[name] - ratio * len(meta)) <= 2


@pytest.mark.parametrize("seed", range(3))
def test_every_content_with_seven_groups_is_in_every_split(meta, seed):
    split = make_splits(meta, SplitConfig(seed=seed))
    groups = split.assign(group=split["id"].map(group_id)).drop_duplicates("group")
    for content, rows in groups.groupby("content"):
        if len(rows) >= 7:
            assert set(rows["split"]) == set(SPLITS), content


@pytest.mark.parametrize("seed", range(3))
def test_material_proportions_hold_within_a_group_per_content_block(meta, seed):
    """Each material is dealt in one consecutive block per content it appears in, and a
    block is within 1.5 groups of its share; more than that would mean broken strata."""
    cfg = SplitConfig(seed=seed)
    split = make_splits(meta, cfg)
    for material, rows in split.groupby("material"):
        slack = 1.5 * rows["content"].nunique() + 0.5
        counts = rows["split"].value_counts()
        for name, ratio in zip(SPLITS, _ratios(cfg), strict=True):
            assert abs(counts.get(name, 0) - ratio * len(rows)) <= slack, (material, name)


def test_three_groups_fill_every_split_and_zero_ratios_stay_empty():
    assert sorted(make_splits(flat(3), SplitConfig())["split"]) == sorted(SPLITS)
    no_test = make_splits(flat(20), SplitConfig(train=0.8, val=0.2, test=0.0))
    assert no_test["split"].value_counts().to_dict() == {"train": 16, "val": 4}
    assert set(make_splits(flat(5), SplitConfig(train=1.0, val=0.0, test=0.0))["split"]) == {
        "train"
    }


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_split(meta):
    pd.testing.assert_frame_equal(
        make_splits(meta, SplitConfig()), make_splits(meta, SplitConfig())
    )


def test_row_order_does_not_change_the_assignment(meta):
    shuffled = meta.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert shuffled["id"].tolist() != meta["id"].tolist()
    original = make_splits(meta, SplitConfig()).set_index("id")["split"]
    again = make_splits(shuffled, SplitConfig()).set_index("id")["split"]
    pd.testing.assert_series_equal(again.loc[original.index], original)


def test_another_seed_gives_another_split(meta):
    first = make_splits(meta, SplitConfig(seed=0))["split"]
    other = make_splits(meta, SplitConfig(seed=1))["split"]
    assert (first != other).sum() >= 10
    assert other.value_counts().to_dict() == first.value_counts().to_dict()


# ---------------------------------------------------------------- leave-one-out folds


@pytest.mark.parametrize("by", ["content", "material"])
def test_folds_cover_every_id_once_with_its_own_value(meta, by):
    folds = leave_one_out_folds(meta, by)
    assert list(folds.columns) == ["id", "fold"]
    assert folds["id"].tolist() == meta["id"].tolist()
    assert folds["id"].is_unique
    assert folds["fold"].tolist() == meta[by].tolist()
    assert set(folds["fold"]) == set(meta[by])
    check_no_leakage(folds, column="fold")


def test_synthetic_set_has_four_content_folds(meta):
    assert leave_one_out_folds(meta, "content")["fold"].nunique() == 4


def test_fold_errors_name_the_group_and_the_column():
    mixed = pd.DataFrame(
        {"id": ["x_aug1", "x_aug2", "y"], "material": ["Paper", "Wood", "Paper"], "content": "C"}
    )
    with pytest.raises(DataError, match=r"'x': 'Paper', 'Wood'"):
        leave_one_out_folds(mixed, "material")
    assert leave_one_out_folds(mixed, "content")["fold"].tolist() == ["C"] * 3
    with pytest.raises(DataError, match="choose one of content, material"):
        leave_one_out_folds(mixed, "type")


# ---------------------------------------------------------------- writing


def test_write_splits_writes_three_checked_csvs(tmp_path):
    frame = artworks().drop(columns="artwork")
    cfg = SplitConfig(**SEVENTY_FIFTEEN)
    result = write_splits(frame, cfg, tmp_path / "splits")
    files = {name: tmp_path / "splits" / f"{name}.csv" for name in ("split", "lo_content")}
    files["lo_material"] = tmp_path / "splits" / "lo_material.csv"
    headers = {name: path.read_text().splitlines()[0] for name, path in files.items()}
    assert headers == {"split": SPLIT_HEADER, "lo_content": "id,fold", "lo_material": "id,fold"}
    written = pd.read_csv(files["split"], dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(written, make_splits(frame, cfg), check_dtype=False)
    for name in ("lo_content", "lo_material"):
        folds = pd.read_csv(files[name], dtype=str, keep_default_na=False)
        assert sorted(folds["id"]) == sorted(frame["id"])
    assert result == SplitResult(
        counts=written["split"].value_counts().to_dict(), groups={"train": 28, "val": 6, "test": 6}
    )
    assert sum(result.counts.values()) == len(frame)


def test_write_splits_fails_before_touching_old_outputs(tmp_path):
    write_splits(flat(10), SplitConfig(), tmp_path)
    before = (tmp_path / "split.csv").read_text()
    bad = artworks(4).drop(columns="artwork")
    bad.loc[bad["id"] == "art001_aug2", "material"] = "Canvas"
    with pytest.raises(DataError, match="'art001'"):
        write_splits(bad, SplitConfig(), tmp_path)
    assert (tmp_path / "split.csv").read_text() == before


def test_write_splits_refuses_a_leaking_assignment(tmp_path, monkeypatch):
    """The guard runs on every write, not only when make_splits is trusted."""
    frame = artworks(4).drop(columns="artwork")
    leaky = make_splits(frame, SplitConfig()).assign(split=np.resize(["train", "val"], len(frame)))
    monkeypatch.setattr(splits, "make_splits", lambda meta, cfg: leaky)
    with pytest.raises(DataError, match="'art000' in train, val"):
        write_splits(frame, SplitConfig(), tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame(), "no records"),
        (pd.DataFrame({"id": ["a"], "content": ["C"]}), "missing column.*material"),
        (pd.DataFrame({"id": ["a"], "mat": ["P"], "cont": ["C"]}), "material, content"),
        (pd.DataFrame({"id": ["a", None], "material": "P", "content": "C"}), "empty id.*row.*1"),
        (pd.DataFrame({"id": ["a", "  "], "material": "P", "content": "C"}), "empty id.*row.*1"),
        (
            pd.DataFrame({"id": ["a", "b"], "material": "P", "content": ["C", np.nan]}),
            "empty content.*'b'",
        ),
        (
            pd.DataFrame({"id": ["a", "b"], "material": ["", "P"], "content": "C"}),
            "empty material.*'a'",
        ),
        (pd.DataFrame({"id": ["a", "a"], "material": "P", "content": "C"}), "duplicate id.*'a'"),
        (
            pd.DataFrame({"id": ["a_aug1", "a_aug2"], "material": "P", "content": ["C", "D"]}),
            "content values.*'a': 'C', 'D'",
        ),
    ],
)
def test_bad_metadata_is_refused_with_the_problem_named(frame, message):
    with pytest.raises(DataError, match=message):
        make_splits(frame, SplitConfig())
