"""`heritageseg study`: plan the combinations, run those without a current result (here or
as one Slurm job array), then summarise, write metrics/study/ and log it all to MLflow.

A failed run does not stop the others: it is reported by (arch, seed, fold) with its log and
traceback in failures.json, the results of the rest are kept, and the next `study` runs only
what is missing, failed or stale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from heritageseg.core.config import Params
from heritageseg.core.fileio import atomic_dir, atomic_write_text, exclusive, write_json
from heritageseg.core.paths import (
    STUDY_FAILURES,
    STUDY_FOLD_PLOT,
    STUDY_MD,
    STUDY_RUNS,
    STUDY_SUMMARY,
)
from heritageseg.ops.launch import JobFailure, SlurmProfile, StudyJob, print_epoch, run_jobs
from heritageseg.stages import pictures
from heritageseg.stages.report import render_markdown, study_sections
from heritageseg.stages.study import (
    StudyRun,
    plan_study,
    read_result,
    result_path,
    run_fingerprint,
    summarize,
)


@dataclass
class StudyOutcome:
    summary: dict
    results: list[dict]  # every run's current result (RUN.json), this call's and earlier ones
    ran: list[StudyRun]  # the runs this call trained (the others had a current result)
    failures: list[dict] = field(default_factory=list)  # arch, seed, fold, log, error


@dataclass(frozen=True)
class StudyFolders:
    cache: Path
    splits: Path
    class_weights: Path
    metrics: Path  # the main benchmark's metrics/ARCH, for the single-seed verdicts
    work: Path  # models/study
    out: Path  # metrics/study


def run_study(
    params: Params, folders: StudyFolders, *, executor: str, profile: SlurmProfile | None = None,
    fresh: bool = False, log: Callable[[str], None] = print,
    on_epoch: Callable[[dict], None] | None = None,
) -> StudyOutcome:  # fmt: skip
    """Run what is not done, keep what is, write the summary (see the module docstring)."""
    f = folders
    runs = plan_study(params, f.cache, f.splits)  # a mistake stops here, before any job
    prints = {run: run_fingerprint(params, run, f.cache, f.splits, f.class_weights) for run in runs}
    with exclusive(f.out, "study"):
        done = {} if fresh else {run: read_result(f.out, run, prints[run]) for run in runs}
        todo = [run for run in runs if done.get(run) is None]
        log(f"study: {len(runs)} run(s), {len(runs) - len(todo)} with a current result, "
            f"{len(todo)} to run ({executor})")  # fmt: skip
        calls = [
            {"params": params, "run": run, "cache": f.cache, "splits": f.splits,
             "class_weights": f.class_weights, "work": f.work, "results": f.out,
             "fingerprint": prints[run], "fresh": fresh, "on_epoch": on_epoch or print_epoch}
            for run in todo
        ]  # fmt: skip
        outcomes = run_jobs(StudyJob(), calls, executor=executor, profile=profile,
                            name="study", log=log, contain=True) if calls else []  # fmt: skip
        failures = [
            {"arch": run.arch, "seed": run.seed, "fold": run.fold, "log": outcome.log,
             "error": outcome.message}
            for run, outcome in zip(todo, outcomes, strict=True)
            if isinstance(outcome, JobFailure)
        ]  # fmt: skip
        results = [r for r in (read_result(f.out, run, prints[run]) for run in runs) if r]
        _tidy_runs(f.out, runs)
        summary = summarize(params, results, f.metrics)
        summary["failures"] = failures
        write_study(f.out, summary)
    return StudyOutcome(summary, results, todo, failures)


def _tidy_runs(out: Path, runs: list[StudyRun]) -> None:
    """Results of combinations no longer in the study leave runs/ (they would be summarised)."""
    keep = {result_path(out, run).name for run in runs}
    for path in (out / STUDY_RUNS).glob("*.json"):
        if path.name not in keep:
            path.unlink()


def write_study(out: Path, summary: dict) -> None:
    """summary.json, failures.json, study.md and the per-fold plot (when there are folds)."""
    write_json(out / STUDY_SUMMARY, summary)
    write_json(out / STUDY_FAILURES, summary["failures"])
    figure = None
    if summary.get("folds", "none") != "none" and summary["archs"]:
        series = {arch: {fold: (s["mean"], s["std"]) for fold, s in a["per_fold"].items()}
                  for arch, a in summary["archs"].items()}  # fmt: skip
        png = pictures.fold_bars(series, f"Test mIoU per held-out {summary['folds']}")
        with atomic_dir(out / "figures") as staging:
            (staging / STUDY_FOLD_PLOT).write_bytes(png)
        figure = out / "figures" / STUDY_FOLD_PLOT
    text = render_markdown(study_sections(summary, figure), out, title="heritageseg study")
    atomic_write_text(out / STUDY_MD, text)
