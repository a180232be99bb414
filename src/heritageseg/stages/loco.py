"""Domain generalisation: leave one content (or material) type out, train on the rest.

Each fold is a *view* of the prepared cache: the same memmaps (linked, not copied) under an
index whose splits are reassigned — the held-out value becomes the test split, every other
record keeps its train/val place (former test records join train). Leakage cannot appear:
splits are grouped, and a group never spans two values of the fold key (checked by `split`).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from heritageseg.core.config import Params
from heritageseg.core.errors import DataError
from heritageseg.core.fileio import atomic_dir, atomic_write_text, write_json
from heritageseg.core.paths import (
    CACHE_IMAGES,
    CACHE_INDEX,
    CACHE_INFO,
    CACHE_MASKS,
    CLASS_WEIGHTS,
    FOLD_BY,
    LOCO_SUMMARY,
    LOCO_SUMMARY_MD,
    METRICS_FILE,
    fold_table,
)
from heritageseg.core.readers import require
from heritageseg.core.rebuild import rebuild_hint
from heritageseg.data.cache import iter_masks, read_index
from heritageseg.data.splits import read_folds
from heritageseg.data.weights import pixel_counts, weights_document
from heritageseg.stages.evaluate import run_evaluation, write_evaluation
from heritageseg.stages.train import run_training


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def fold_index(index: pd.DataFrame, folds: pd.DataFrame, held_out: str) -> pd.DataFrame:
    """The cache index with the held-out value as test and everything else as train/val."""
    fold_of = dict(zip(folds["id"].astype(str), folds["fold"].astype(str), strict=True))
    missing = sorted(set(index["id"]) - set(fold_of))
    if missing:
        raise DataError(f"{len(missing)} cached id(s) have no fold, e.g. {missing[0]}: rerun split")
    out = index.copy()
    held = out["id"].map(fold_of) == held_out
    out.loc[held, "split"] = "test"
    out.loc[~held & (out["split"] == "test"), "split"] = "train"
    return out


def write_fold_cache(cache: Path, index: pd.DataFrame, out: Path) -> None:
    """A cache folder that links the memmaps and holds the fold's own index."""
    with atomic_dir(out) as staging:
        for name in (CACHE_IMAGES, CACHE_MASKS):
            os.symlink((cache / name).resolve(), staging / name)
        shutil.copy(cache / CACHE_INFO, staging / CACHE_INFO)
        index.to_csv(staging / CACHE_INDEX, index=False)


def fold_tables(cache: Path, splits: Path, by: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cache index, fold table) of leave-one-`by`-out, checked to cover every cached id."""
    if by not in FOLD_BY:
        raise DataError(f"leave-one-out by {by!r}: choose one of {', '.join(FOLD_BY)}")
    folds = read_folds(splits / fold_table(by))
    index = read_index(cache)
    missing = sorted(set(index["id"]) - set(folds["id"]))
    problem = f"{len(missing)} cached id(s) have no fold (e.g. {missing[:1]}): stale or cut short"
    require(not missing, splits / fold_table(by), problem, rebuild_hint("split"))
    return index, folds


def fold_problem(index: pd.DataFrame) -> str | None:
    """What makes a (fold) index unusable for training and testing, or None."""
    counts = index["split"].value_counts()
    empty = [split for split in ("test", "train", "val") if not counts.get(split, 0)]
    return f"leaves no {' and no '.join(empty)} record" if empty else None


def run_leave_one_out(
    params: Params, arch: str, *, cache: Path, splits: Path, out: Path, by: str = "content"
) -> dict:  # fmt: skip
    """Train and test `arch` once per held-out value; return (and write) the summary."""
    index, folds = fold_tables(cache, splits, by)
    params = replace(params, evaluate=replace(params.evaluate, resolution="prepared"))
    results = {}
    for value in sorted(folds["fold"].unique()):
        results[value] = _run_fold(params, arch, cache, fold_index(index, folds, value),
                                   out / slug(value))  # fmt: skip
        print(f"{arch} without {value}: test mIoU {100 * results[value]['miou']:.2f}%")
    mious = np.array([r["miou"] for r in results.values()])
    spread = float(mious.std(ddof=1)) if len(mious) > 1 else 0.0
    summary = {"arch": arch, "by": by, "folds": results, "miou_mean": float(mious.mean()),
               "miou_std": spread}  # fmt: skip
    write_json(out / LOCO_SUMMARY, summary)
    atomic_write_text(out / LOCO_SUMMARY_MD, summary_markdown(summary))
    return summary


def write_fold_inputs(
    params: Params, cache: Path, index: pd.DataFrame, out: Path
) -> tuple[Path, Path]:  # fmt: skip
    """The fold's cache view and class weights (from its own train masks) under `out`."""
    problem = fold_problem(index)
    if problem:
        raise DataError(f"{out.name}: holding it out {problem}")
    fold_cache = out / "cache"
    write_fold_cache(cache, index, fold_cache)
    weights = weights_document(pixel_counts(iter_masks(fold_cache, "train")), params.weights)
    write_json(out / CLASS_WEIGHTS.name, weights)
    return fold_cache, out / CLASS_WEIGHTS.name


def _run_fold(params: Params, arch: str, cache: Path, index: pd.DataFrame, out: Path) -> dict:
    fold_cache, weights = write_fold_inputs(params, cache, index, out)
    run_training(params, arch, fold_cache, weights, out / "model", fresh=True, progress=False)
    evaluation = run_evaluation(params, arch, cache=fold_cache, raw=Path(), splits=Path(),
                                model_dir=out / "model", split="test")  # fmt: skip
    write_evaluation(evaluation, out / "metrics")
    document = evaluation.documents[METRICS_FILE]
    counts = index["split"].value_counts()
    return {
        "miou": document["miou"],
        "miou_ci95": document["miou_ci95"],
        "test_images": int(counts.get("test", 0)),
        "train_images": int(counts.get("train", 0)),
    }


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# {summary['arch']}: leave one {summary['by']} out",
        "",
        f"| held-out {summary['by']} | train | test | test mIoU % [95% CI] |",
        "|---|---|---|---|",
    ]
    for value, r in summary["folds"].items():
        low, high = r["miou_ci95"]
        lines.append(
            f"| {value} | {r['train_images']} | {r['test_images']} | "
            f"{100 * r['miou']:.2f} [{100 * low:.2f}, {100 * high:.2f}] |"
        )
    lines += ["", f"mean ± std over folds: {100 * summary['miou_mean']:.2f} ± "
              f"{100 * summary['miou_std']:.2f} %", ""]  # fmt: skip
    return "\n".join(lines)
