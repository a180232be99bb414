"""Studies: every (architecture, seed, held-out fold) trained and tested, then compared with
intervals that resample the training runs as well as the test images.

One run is `run_study_run`: the fold's cache view (linked memmaps, as `loco` builds them),
training that resumes from its last saved epoch, a test evaluation, and RUN.json under
metrics/study/runs/ (written last, atomically: a run has a result or it has not). A result
carries the fingerprint of everything it was computed from, so a rerun of the study keeps
the results whose inputs are unchanged and runs only the missing, failed or stale ones.
`summarize` turns the results into the summary: spread over seeds (and folds), the two-stage
bootstrap of every pair, and whether the main benchmark's single-seed verdicts survive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.config import Params
from heritageseg.core.errors import DataError
from heritageseg.core.fileio import sha256_file, write_json
from heritageseg.core.paths import METRICS_FILE, PER_IMAGE, STUDY_RUNS, fold_table
from heritageseg.data.cache import read_index, read_info
from heritageseg.nn.metrics import paired_bootstrap, spread, study_bootstrap
from heritageseg.stages.evaluate import run_evaluation
from heritageseg.stages.loco import fold_index, fold_problem, fold_tables, slug, write_fold_inputs
from heritageseg.stages.report import aligned, verdict
from heritageseg.stages.results import read_per_image
from heritageseg.stages.train import run_training, training_fingerprint

ALL = "all"  # the fold of `folds: none`: the split's own test set
SCORING = ("batch_size", "bootstrap", "seed", "backend")  # the evaluate keys a result depends on


@dataclass(frozen=True)
class StudyRun:
    """One combination of the study: `arch` trained with train.seed = `seed`, tested on
    `fold` (ALL, or the held-out content / material value)."""

    arch: str
    seed: int
    fold: str = ALL

    @property
    def name(self) -> str:
        """RUN of metrics/study/runs/RUN.json and of its MLflow child run."""
        return f"{self.arch}-seed{self.seed}" + ("" if self.fold == ALL else f"-{slug(self.fold)}")

    def folder(self, work: Path) -> Path:
        """Its training (resumable) and fold cache view, under models/study/."""
        return work / self.arch / f"seed{self.seed}" / slug(self.fold)


def plan_study(params: Params, cache: Path, splits: Path) -> list[StudyRun]:
    """Every combination, in (arch, seed, fold) order, after checking that each fold can be
    held out: a mistake is an error here, before anything is trained or submitted."""
    cfg = params.study
    index = read_index(cache)
    if cfg.folds == "none":
        problem = fold_problem(index)
        if problem:
            raise DataError(f"{cache}: {problem}: the study has nothing to train or test on")
        folds = [ALL]
    else:
        index, table = fold_tables(cache, splits, cfg.folds)
        folds = sorted(table["fold"].unique())
        for value in folds:
            problem = fold_problem(fold_index(index, table, value))
            if problem:
                where = splits / fold_table(cfg.folds)
                raise DataError(
                    f"study.folds={cfg.folds}: holding out {value!r} ({where}) {problem}; "
                    "use folds: none, or another split"
                )
    return [StudyRun(a, s, f) for a in cfg.archs for s in cfg.seeds for f in folds]


def run_params(params: Params, seed: int) -> Params:
    """`params` for one run: its seed, scored at the prepared size only (as `loco` does)."""
    return dataclasses.replace(
        params,
        train=dataclasses.replace(params.train, seed=seed),
        evaluate=dataclasses.replace(params.evaluate, resolution="prepared", split="test"),
    )


def run_fingerprint(params: Params, run: StudyRun, cache: Path, splits: Path,
                    class_weights: Path) -> str:  # fmt: skip
    """Everything a run's result depends on: its training's params and data, the weights or
    fold table, and how it is scored. A result with another fingerprint is stale."""
    params = run_params(params, run.seed)
    data = (sha256_file(class_weights) if run.fold == ALL
            else sha256_file(splits / fold_table(params.study.folds)))  # fmt: skip
    content = {
        "run": dataclasses.asdict(run),
        "train": training_fingerprint(params, run.arch, read_info(cache)),
        "weights": dataclasses.asdict(params.weights),
        "data": data,
        "evaluate": {k: getattr(params.evaluate, k) for k in SCORING},
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def result_path(results: Path, run: StudyRun) -> Path:
    return results / STUDY_RUNS / f"{run.name}.json"


def read_result(results: Path, run: StudyRun, fingerprint: str) -> dict | None:
    """The run's result if it exists and was computed from the same inputs, else None."""
    path = result_path(results, run)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: run it again
    return result if result.get("fingerprint") == fingerprint else None


def run_study_run(
    params: Params, run: StudyRun, *, cache: Path, splits: Path, class_weights: Path,
    work: Path, results: Path, fingerprint: str, fresh: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:  # fmt: skip
    """Train and test one combination; write (and return) its result."""
    params = run_params(params, run.seed)
    folder = run.folder(work)
    if run.fold == ALL:
        run_cache, weights = cache, class_weights
    else:
        index, table = fold_tables(cache, splits, params.study.folds)
        run_cache, weights = write_fold_inputs(
            params, cache, fold_index(index, table, run.fold), folder
        )
    trained = run_training(params, run.arch, run_cache, weights, folder / "model", fresh=fresh,
                           progress=False, on_epoch=on_epoch)  # fmt: skip
    evaluation = run_evaluation(params, run.arch, cache=run_cache, raw=Path(), splits=Path(),
                                model_dir=folder / "model", split="test")  # fmt: skip
    document, scored = evaluation.documents[METRICS_FILE], evaluation.scored["prepared"]
    result = {
        **dataclasses.asdict(run),
        "fingerprint": fingerprint,
        "miou": document["miou"],
        "miou_ci95": document["miou_ci95"],
        "miou_damage": document["miou_damage"],
        "per_class_iou": {
            name: (entry["iou"] if entry["present"] else None)
            for name, entry in document["per_class"].items()
        },
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "image_ids": list(scored.ids),
        "per_image": scored.per_image.tolist(),
    }
    write_json(result_path(results, run), result)
    return result


# ---------------------------------------------------------------- summary


def summarize(params: Params, results: list[dict], main_metrics: Path | None) -> dict:
    """Per architecture the spread over runs (and per fold), every pair's two-stage
    bootstrap and verdict, and the main benchmark's single-seed verdicts beside them."""
    cfg = params.study
    archs = [a for a in cfg.archs if any(r["arch"] == a for r in results)]
    by_arch = {a: [r for r in results if r["arch"] == a] for a in archs}
    summary = {
        "folds": cfg.folds,
        "seeds": list(cfg.seeds),
        "archs": {a: _arch_summary(runs) for a, runs in by_arch.items()},
        "comparisons": [],
    }
    for a, b in itertools.combinations(archs, 2):
        strata = _strata(by_arch[a], by_arch[b])
        if not strata:
            continue
        pair = study_bootstrap(*zip(*strata, strict=True), iterations=cfg.bootstrap,
                               seed=cfg.seed)  # fmt: skip
        pair = {"a": a, "b": b, **pair}
        pair["verdict"] = verdict(pair)
        pair["single_seed"] = _single_seed_verdict(a, b, main_metrics, params)
        summary["comparisons"].append(pair)
    return summary


def _arch_summary(runs: list[dict]) -> dict:
    mious = np.array([r["miou"] for r in runs])
    folds = sorted({r["fold"] for r in runs})
    per_fold = {f: spread(np.array([r["miou"] for r in runs if r["fold"] == f])) for f in folds}
    fold_means = np.array([mean for mean, _ in per_fold.values()])
    mean, std = spread(mious)
    per_class = {}
    for name in CLASS_NAMES:
        values = np.array([np.nan if r["per_class_iou"][name] is None
                           else r["per_class_iou"][name] for r in runs])  # fmt: skip
        per_class[name] = dict(zip(("mean", "std"), spread(values), strict=True))
    return {
        "runs": len(runs),
        "seeds": sorted({r["seed"] for r in runs}),
        "miou_mean": mean,
        "miou_std": std,
        "miou_damage_mean": spread(np.array([r["miou_damage"] for r in runs]))[0],
        "per_fold": {f: {"mean": m, "std": s} for f, (m, s) in per_fold.items()},
        "over_folds_std": spread(fold_means)[1],
        "per_class_iou": per_class,
    }


def _strata(runs_a: list[dict], runs_b: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold both architectures ran: (S_a, N, C, C) and (S_b, N, C, C) on the images
    every run of the fold was scored on, in one order."""
    strata = []
    for fold in sorted({r["fold"] for r in runs_a} & {r["fold"] for r in runs_b}):
        fold_runs = [r for r in runs_a + runs_b if r["fold"] == fold]
        shared = set.intersection(*(set(r["image_ids"]) for r in fold_runs))
        order = sorted(shared)
        if not order:
            continue
        stacks = []
        for runs in (runs_a, runs_b):
            stacks.append(np.stack([_matrices(r, order) for r in runs if r["fold"] == fold]))
        strata.append((stacks[0], stacks[1]))
    return strata


def _matrices(result: dict, order: list[str]) -> np.ndarray:
    position = {image: i for i, image in enumerate(result["image_ids"])}
    matrices = np.asarray(result["per_image"], dtype=np.int64)
    return matrices[[position[image] for image in order]]


def _single_seed_verdict(a: str, b: str, metrics: Path | None, params: Params) -> str | None:
    """The main benchmark's verdict on a vs b (metrics/ARCH: seed train.seed, the split's test
    set, paired bootstrap over images), or None where it has not been evaluated."""
    if metrics is None:
        return None
    paths = [metrics / arch / PER_IMAGE for arch in (a, b)]
    if not all(path.is_file() for path in paths):
        return None
    per_image = [read_per_image(path, ("prepared",)).get("prepared") for path in paths]
    if any(p is None for p in per_image):
        return None
    matrices_a, matrices_b = aligned(*per_image)
    if len(matrices_a) == 0:
        return None
    pair = paired_bootstrap(matrices_a, matrices_b, params.evaluate.bootstrap, params.evaluate.seed)
    return verdict({"a": a, "b": b, **pair})
