"""Leave-one-content-out folds as views of the cache, trained and scored for real."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from heritageseg.core.config import load_params
from heritageseg.core.errors import DataError
from heritageseg.data.cache import CacheDataset, read_index
from heritageseg.stages.loco import fold_index, run_leave_one_out, write_fold_cache


def test_fold_index_holds_out_one_content_and_keeps_the_rest(tiny):
    index = read_index(tiny / "data" / "cache")
    folds = pd.read_csv(tiny / "data" / "splits" / "lo_content.csv", dtype=str)
    held = folds["fold"].iloc[0]
    view = fold_index(index, folds, held)
    assert set(view.loc[view["split"] == "test", "content"]) == {held}
    assert held not in set(view.loc[view["split"] != "test", "content"])
    others = index["content"] != held
    was_val = others & (index["split"] == "val")
    assert (view.loc[was_val, "split"] == "val").all()  # validation unchanged
    assert (view.loc[others & (index["split"] == "test"), "split"] == "train").all()


def test_fold_cache_links_the_memmaps_instead_of_copying(tiny, tmp_path):
    cache = tiny / "data" / "cache"
    folds = pd.read_csv(tiny / "data" / "splits" / "lo_content.csv", dtype=str)
    view = fold_index(read_index(cache), folds, folds["fold"].iloc[0])
    write_fold_cache(cache, view, tmp_path / "fold")
    assert (tmp_path / "fold" / "images.npy").is_symlink()
    test = CacheDataset(tmp_path / "fold", "test")
    first = test[0]
    original = CacheDataset(cache)[int(test.rows[0])]
    assert np.array_equal(first["image"], original["image"])


def test_an_id_without_a_fold_is_named(tiny):
    index = read_index(tiny / "data" / "cache")
    folds = pd.read_csv(tiny / "data" / "splits" / "lo_content.csv", dtype=str).iloc[1:]
    with pytest.raises(DataError, match="have no fold"):
        fold_index(index, folds, "Line art")


@pytest.mark.slow
@pytest.mark.training
def test_leave_one_content_out_trains_and_scores_every_fold(tiny, tmp_path):
    params = load_params(tiny / "params.yaml")
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=1))
    params = dataclasses.replace(
        params, evaluate=dataclasses.replace(params.evaluate, bootstrap=50)
    )
    splits = tiny / "data" / "splits"
    summary = run_leave_one_out(
        params, "segformer", cache=tiny / "data" / "cache", splits=splits, out=tmp_path
    )
    contents = set(pd.read_csv(splits / "lo_content.csv")["fold"])
    assert set(summary["folds"]) == contents
    mious = [fold["miou"] for fold in summary["folds"].values()]
    assert summary["miou_mean"] == pytest.approx(np.mean(mious))
    assert summary["miou_std"] == pytest.approx(np.std(mious, ddof=1))
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    table = (tmp_path / "summary.md").read_text()
    assert all(f"| {content} |" in table for content in contents)
    for content in contents:
        test_images = summary["folds"][content]["test_images"]
        assert test_images == int((pd.read_csv(splits / "split.csv")["content"] == content).sum())
