"""Which command rebuilds each kind of file the pipeline writes: the one table the error
messages of the readers (core.readers) take their way out from.

Stages are those of `dvc.yaml`; `{arch}` is filled in for the per-architecture ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from heritageseg.core import paths


@dataclass(frozen=True)
class Rebuild:
    """How to get a good copy of a file back: rerun its DVC stage, run a command, or (for a
    DVC-cached output) restore the last committed version."""

    stage: str  # in dvc.yaml, e.g. "prepare", "train@{arch}"
    command: str = ""  # a direct command, when one is quicker than the stage
    checkout: str = ""  # the DVC output holding the file; "" when DVC does not cache it


_MODEL = Rebuild(
    "train@{arch}", "heritageseg train --arch {arch} --fresh", f"{paths.MODELS}/{{arch}}"
)

REBUILD: dict[str, Rebuild] = {
    "manifest": Rebuild("ingest", checkout=str(paths.RAW)),
    "split": Rebuild("split", checkout=str(paths.SPLITS)),
    "cache": Rebuild("prepare", checkout=str(paths.CACHE)),
    "class_weights": Rebuild("weights", checkout=str(paths.CLASS_WEIGHTS)),
    "model": _MODEL,  # model.safetensors, config.json, train_metrics.json, history.csv
    "resume": _MODEL,
    "run_file": _MODEL,  # mlflow.json: the run is recorded again by training with tracking on
    "metrics": Rebuild("evaluate@{arch}"),  # metrics.json, metrics_native.json (not cached)
    "study": Rebuild("study", "heritageseg study"),  # metrics/study/summary.json (and runs/)
    "per_image": Rebuild("evaluate@{arch}", checkout=f"{paths.METRICS}/{{arch}}/{paths.PER_IMAGE}"),
}
"""File kind -> how to rebuild it."""


def rebuild_hint(kind: str, arch: str = "ARCH") -> str:
    """`rebuild it with ...` for an error message about a broken file of `kind`."""
    way = REBUILD[kind]
    stage = f"`dvc repro -f -s {way.stage.format(arch=arch)}`"
    first = f"`{way.command.format(arch=arch)}` (or {stage})" if way.command else stage
    if not way.checkout:
        return f"rebuild it with {first}"
    checkout = f"`dvc checkout {way.checkout.format(arch=arch)}`"
    return f"rebuild it with {first}, or restore the committed version with {checkout}"
