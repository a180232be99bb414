"""MLflow: every run tracked, one parent run per benchmark, the registry and promotion.

The only module that talks to MLflow. The stages run as separate processes (DVC, Slurm), so
runs are tied together by tags, not by an open run: a benchmark id tags one parent run
(found or created by tag search); `train` creates one child run per architecture and writes
its id to `models/ARCH/mlflow.json` (inside the train stage's output) once the training
succeeded, so `evaluate` logs into the same child run and a failed run's id is never left
there; `promote` and the report log to the parent.

Store: `MLFLOW_TRACKING_URI` > params `tracking.uri` > `sqlite:///mlruns/mlflow.db`, artifacts
of a sqlite store in `artifacts/` beside the database. An unreachable server fails before
training starts; a server that goes away during training costs warnings, never the run:
epoch metrics are kept and sent again when the run ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heritageseg.core.config import Params, TrackingConfig, flatten_keys
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import sha256_file, write_json
from heritageseg.core.paths import CONFIG, HISTORY, MANIFEST, METRICS_FILE, RUN_FILE, TRAIN_METRICS
from heritageseg.core.readers import read_json
from heritageseg.core.rebuild import rebuild_hint
from heritageseg.core.trained import read_config

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
BENCHMARK_ENV = "HERITAGESEG_BENCHMARK"
TAG_BENCHMARK = "heritageseg.benchmark"
TAG_ROLE = "heritageseg.role"
TAG_ARCH = "heritageseg.arch"
TAG_STUDY = "heritageseg.study"
TAG_FINGERPRINT = "heritageseg.fingerprint"
TAG_SHOWN = "heritageseg.shown"  # "true" on the benchmark's last evaluated run of each arch
PRODUCTION = "production"
# Marks the experiment as model training for MLflow 3's UI (see experiment_page for the view)
EXPERIMENT_KIND = "mlflow.experimentKind"
KIND_TAG = {EXPERIMENT_KIND: "custom_model_development"}
HEADLINE = ("miou", "miou_damage", "dice", "throughput_img_s")  # on the parent, per arch
# An experiment tag holding a view of the runs list, as the UI's Share button writes it
SHARED_VIEW = "mlflow.sharedViewState."


class TrackingError(HeritagesegError):
    """The tracking store cannot be reached or used."""


def model_name(arch: str) -> str:
    return f"heritageseg-{arch}"


# ---------------------------------------------------------------- store


def tracking_uri(cfg: TrackingConfig) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or DEFAULT_URI


def connect(cfg: TrackingConfig, create: bool = True) -> str:
    """Point MLflow at the store, check it answers, and return the experiment id. A sqlite
    store is created on first use, unless `create` is false (commands that only read the
    registry: a missing store there means the wrong folder, not a new project).

    Short HTTP timeouts and few retries (unless set in the environment), so that a dead
    server is reported in seconds, before any training, instead of after minutes of retries.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow

    uri = tracking_uri(cfg)
    _check_reachable(uri, create)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return _experiment_id(uri, cfg.experiment)


def experiment_page(experiment_id: str, view: str | None = None) -> str:
    """The UI's address (after the host) of the experiment's runs: in a shared view (see
    comparison_view) as a table, else as charts. MLflow 3's UI picks its GenAI or
    machine-learning view from a `workflowType` the browser remembers (GenAI by default), not
    from the experiment's kind tag alone: the link asks for the ML view."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if view is None:
        return f"{page}&compareRunsMode=CHART"
    return f"{page}&viewStateShareKey={view}&compareRunsMode=TABLE"


def comparison_view(experiment_id: str, benchmark: str) -> str:
    """The benchmark as a table, one row an architecture (its last evaluated run), best test
    mIoU first, with its interval, damage mIoU, Dice and img/s at both resolutions: saved as
    a shared view of the experiment (the parent run, collapsed, would hide the rows). The
    page's address."""
    from mlflow.tracking import MlflowClient

    key = hashlib.sha256(benchmark.encode()).hexdigest()[:16]  # the UI's share keys are hex
    columns = [f"metrics.`{prefix}_{name}`" for prefix in ("test", "test_native")
               for name in ("miou", "miou_ci95_low", "miou_ci95_high", *HEADLINE[1:])]  # fmt: skip
    state = {
        "searchFilter": f"tags.`{TAG_BENCHMARK}` = '{benchmark}' and tags.`{TAG_SHOWN}` = 'true'",
        "orderByKey": "metrics.`test_miou`",
        "orderByAsc": False,
        "selectedColumns": columns,
    }
    MlflowClient().set_experiment_tag(experiment_id, SHARED_VIEW + key, json.dumps(state))
    return experiment_page(experiment_id, key)


def latest_benchmark(experiment_id: str) -> str | None:
    """The benchmark id of the experiment's newest benchmark parent run, or None."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient().search_runs(
        [experiment_id], f"tags.`{TAG_ROLE}` = 'benchmark'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    return found[0].data.tags[TAG_BENCHMARK] if found else None


def _check_reachable(uri: str, create: bool) -> None:
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({type(exc).__name__}): start it "
                "(`mlflow server --host 127.0.0.1 --port 5000`), point MLFLOW_TRACKING_URI or "
                "params tracking.uri at a live one, or set tracking.enabled: false in params.yaml"
            ) from None
    elif uri.startswith("sqlite:///"):
        path = _sqlite_path(uri)
        if not create and not path.is_file():
            raise TrackingError(
                f"MLflow store {uri} does not exist (no {path.absolute()}): run this from the "
                "project folder, or point MLFLOW_TRACKING_URI (or tracking.uri in the project's "
                "params.yaml, given with --params) at the project's store"
            )
        path.parent.mkdir(parents=True, exist_ok=True)


def _sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def _experiment_id(uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.tags.get(EXPERIMENT_KIND) != KIND_TAG[EXPERIMENT_KIND]:
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND,
                                          KIND_TAG[EXPERIMENT_KIND])  # fmt: skip
            return experiment.experiment_id
        location = None
        if uri.startswith("sqlite:///"):
            location = (_sqlite_path(uri).resolve().parent / "artifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=KIND_TAG)
        except MlflowException:  # created meanwhile by another process
            return client.get_experiment_by_name(name).experiment_id
    except MlflowException as exc:
        if exc.error_code == "UNAUTHENTICATED":
            raise TrackingError(
                f"MLflow server {uri} needs a login: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or write them in ~/.mlflow/credentials)"
            ) from None
        raise TrackingError(f"MLflow store {uri}: {exc.message}") from None


# ---------------------------------------------------------------- tags


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def git_state() -> tuple[str, bool]:
    """(commit, dirty): dirty when tracked files differ from the commit."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    return commit, bool(_git("status", "--porcelain", "--untracked-files=no"))


def file_checksum(path: Path) -> str:
    return sha256_file(path) if path.is_file() else "missing"


def benchmark_id(params_file: Path, manifest: Path) -> str:
    """`HERITAGESEG_BENCHMARK`, else a hash of the code commit, params file and data manifest:
    a change to any of them starts a new benchmark (a new parent run)."""
    if os.environ.get(BENCHMARK_ENV):
        return os.environ[BENCHMARK_ENV]
    digest = hashlib.sha256()
    for part in (git_state()[0], file_checksum(params_file), file_checksum(manifest)):
        digest.update(part.encode())
    return digest.hexdigest()[:12]


def executor() -> str:
    if os.environ.get("HERITAGESEG_EXECUTOR"):
        return os.environ["HERITAGESEG_EXECUTOR"]
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm"
    return "torchrun" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "local"


def run_tags(stage: str, manifest: Path | None) -> dict[str, str]:
    commit, dirty = git_state()
    tags = {
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "mlflow.source.git.commit": commit,
        "stage": stage,
        "host": socket.gethostname(),
        "executor": executor(),
    }
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURMD_NODENAME"):
        if os.environ.get(name):
            tags[f"slurm.{name.lower().removeprefix('slurm_')}"] = os.environ[name]
    if manifest is not None:
        tags["data.manifest_sha256"] = file_checksum(manifest)
    return tags


def flatten(data: Any, prefix: str) -> dict[str, str]:
    """A params section or config as MLflow params: {"prefix.a.b": "value"}, lists as JSON."""
    return {
        key: json.dumps(value) if isinstance(value, list | tuple) else str(value)
        for key, value in flatten_keys(data, f"{prefix}.").items()
    }


# ---------------------------------------------------------------- runs


def find_parent(experiment_id: str, benchmark: str, role: str = "benchmark") -> str | None:
    """The parent run id of the benchmark (or of the study, role "study": its id is tagged
    TAG_STUDY) — the oldest, should two processes race — or None."""
    from mlflow.tracking import MlflowClient

    tag = TAG_STUDY if role == "study" else TAG_BENCHMARK
    found = MlflowClient().search_runs(
        [experiment_id],
        f"tags.`{tag}` = '{benchmark}' and tags.`{TAG_ROLE}` = '{role}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


def parent_run(experiment_id: str, benchmark: str, role: str = "benchmark",
               manifest: Path | None = None) -> str:  # fmt: skip
    """The parent run id (see find_parent), created (and marked finished) on first use."""
    from mlflow.tracking import MlflowClient

    found = find_parent(experiment_id, benchmark, role)
    if found is not None:
        return found
    client = MlflowClient()
    tag = TAG_STUDY if role == "study" else TAG_BENCHMARK
    run = client.create_run(
        experiment_id,
        run_name=f"{role}-{benchmark}",
        tags={tag: benchmark, TAG_ROLE: role, **run_tags(role, manifest)},
    )
    client.set_terminated(run.info.run_id)
    if role == "benchmark":
        comparison_view(experiment_id, benchmark)
    return run.info.run_id


@dataclass
class RunTracker:
    """One child run of the benchmark; metrics that fail to send are kept for later."""

    run_id: str
    pending: list[tuple[str, float, int]] = field(default_factory=list)
    run_file: dict = field(default_factory=dict)  # OUT/mlflow.json, written on success

    def on_epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        self.pending += [(k, float(v), step) for k, v in row.items() if k != "epoch"]
        self.flush()

    def record_job(self, history: list[dict], job: dict[str, str]) -> None:
        """After a remote (Slurm) training: its epochs, and where it ran as tags."""
        from mlflow.tracking import MlflowClient

        for row in history:
            self.on_epoch(row)
        for label, value in job.items():
            MlflowClient().set_tag(self.run_id, label.replace("slurm_", "slurm."), value)

    def flush(self) -> bool:
        """Send pending metrics; on failure warn and keep them (training goes on)."""
        from mlflow.tracking import MlflowClient

        if not self.pending:
            return True
        metrics = _metrics(self.pending)
        try:
            for start in range(0, len(metrics), 1000):
                MlflowClient().log_batch(self.run_id, metrics=metrics[start : start + 1000])
        except Exception as exc:  # the network or the store: never fatal to training
            warnings.warn(f"MLflow logging failed, kept for retry: {exc}", stacklevel=2)
            return False
        self.pending.clear()
        return True


def start_training(params: Params, params_file: Path, arch: str, raw: Path) -> RunTracker:
    """Connect (fail fast), find the benchmark's parent run, create this arch's child run
    with params and tags; the tracker holds what models/ARCH/mlflow.json will say."""
    from mlflow.tracking import MlflowClient

    experiment_id = connect(params.tracking)
    manifest = raw / MANIFEST
    benchmark = benchmark_id(params_file, manifest)
    parent = parent_run(experiment_id, benchmark)
    client = MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=arch,
        tags={
            **run_tags("train", manifest),
            "mlflow.parentRunId": parent,
            TAG_BENCHMARK: benchmark,
            TAG_ARCH: arch,
            TAG_ROLE: "arch",
        },
    )
    run_id = run.info.run_id
    log_params(run_id, _stage_params(params, arch))
    return RunTracker(run_id, run_file={
        "run_id": run_id, "parent_run_id": parent, "experiment_id": experiment_id,
        "benchmark": benchmark, "tracking_uri": tracking_uri(params.tracking)})  # fmt: skip


@contextlib.contextmanager
def training_run(
    params: Params, params_file: Path, arch: str, out: Path, raw: Path
) -> Iterator[RunTracker]:
    """start_training, then the block (the run marked FAILED if it raises, OUT/mlflow.json
    left as it was), then OUT/mlflow.json for `evaluate` and finish_training with
    OUT/train_metrics.json."""
    tracker = start_training(params, params_file, arch, raw)
    with failing_run(tracker.run_id):
        yield tracker
    write_json(out / RUN_FILE, tracker.run_file)
    summary = read_json(out / TRAIN_METRICS, rebuild_hint("model", out.name))
    finish_training(tracker, out, summary)


def _stage_params(params: Params, arch: str) -> dict[str, str]:
    """The train stage's params section, flattened: shared train keys, this arch's model
    and the augmentations."""
    return {
        **flatten(params.train.shared(), "train"),
        **flatten(params.train.model(arch), "model"),
        **flatten(params.augment, "augment"),
        "arch": arch,
        "lr": str(params.train.lr_for(arch)),
    }


def log_params(run_id: str, values: dict[str, str]) -> None:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    items = [Param(k, v[:6000]) for k, v in sorted(values.items())]
    for start in range(0, len(items), 100):
        MlflowClient().log_batch(run_id, params=items[start : start + 100])


def finish_training(tracker: RunTracker, model_dir: Path, summary: dict) -> bool:
    """Final train metrics, the resolved config as params, history and config as files.
    A store that fails now costs a warning, not the finished training: False."""
    try:
        _finish_training(tracker, model_dir, summary)
    except Exception as exc:  # the network or the store: the weights are safe on disk
        warnings.warn(
            f"training finished (weights in {model_dir}) but MLflow run {tracker.run_id} could "
            f"not be completed: {exc}",
            stacklevel=2,
        )
        return False
    return True


def _finish_training(tracker: RunTracker, model_dir: Path, summary: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if not tracker.flush():
        raise TrackingError(f"{len(tracker.pending)} epoch metrics left unsent")
    config = read_config(model_dir / CONFIG)
    resolved = {k: v for k, v in flatten(config, "config").items() if not k.startswith(
        ("config.train.", "config.augment.", "config.model."))}  # fmt: skip
    log_params(tracker.run_id, resolved)
    numbers = {k: float(v) for k, v in summary.items() if isinstance(v, int | float)}
    client.log_batch(tracker.run_id, metrics=_metrics(numbers))
    for name in (HISTORY, CONFIG, TRAIN_METRICS):
        if (model_dir / name).is_file():
            client.log_artifact(tracker.run_id, str(model_dir / name), "train")
    client.set_terminated(tracker.run_id)


def _metrics(values: dict[str, float] | list[tuple[str, float, int]]) -> list:
    """MLflow Metric entities from {name: value} (step 0) or [(name, value, step)]."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [(k, v, 0) for k, v in values.items()] if isinstance(values, dict) else values
    return [Metric(k, v, now, step) for k, v, step in items]


@contextlib.contextmanager
def failing_run(run_id: str | None) -> Iterator[None]:
    """Mark the run FAILED when the block raises (the error itself propagates)."""
    try:
        yield
    except BaseException:
        if run_id is not None:
            with contextlib.suppress(Exception):
                from mlflow.tracking import MlflowClient

                MlflowClient().set_terminated(run_id, "FAILED")
        raise


RUN_FILE_KEYS = ("run_id", "parent_run_id", "experiment_id", "benchmark")


def read_run_file(model_dir: Path) -> dict | None:
    """models/ARCH/mlflow.json, the run that trained the model; None when not tracked."""
    path = model_dir / RUN_FILE
    if not path.exists():
        return None
    return read_json(path, rebuild_hint("run_file", model_dir.name), RUN_FILE_KEYS)


# ---------------------------------------------------------------- evaluation


def log_evaluation(
    params: Params, arch: str, model_dir: Path, metrics_dir: Path, documents: dict[str, dict],
    raw: Path, params_file: Path,
) -> tuple[str, str]:  # fmt: skip
    """Into the arch's child run (from mlflow.json; a new child run if train was not
    tracked): final metrics, the per-class table, the confusion matrix (JSON + PNG), every
    file in METRICS/ARCH (pictures included). Returns (run id, benchmark id)."""
    from mlflow.tracking import MlflowClient

    experiment_id = connect(params.tracking)
    saved = read_run_file(model_dir)
    client = MlflowClient()
    if saved is not None and _in_store(client, saved["run_id"], model_dir):
        run_id, benchmark, parent = saved["run_id"], saved["benchmark"], saved["parent_run_id"]
    else:  # not tracked at training, or tracked in another store: a new child run
        manifest = raw / MANIFEST
        benchmark = saved["benchmark"] if saved else benchmark_id(params_file, manifest)
        parent = parent_run(experiment_id, benchmark)
        run_id = client.create_run(experiment_id, run_name=arch, tags={
            **run_tags("evaluate", manifest), "mlflow.parentRunId": parent,
            TAG_BENCHMARK: benchmark, TAG_ARCH: arch, TAG_ROLE: "arch"}).info.run_id  # fmt: skip
    client.set_tag(run_id, "evaluated", "true")
    _show_only(client, experiment_id, benchmark, arch, run_id)
    log_params(run_id, flatten(params.evaluate, "evaluate"))
    for name, document in documents.items():
        prefix = metrics_prefix(name, document)
        _log_metrics_document(client, run_id, document, prefix)
        client.log_batch(parent, metrics=_metrics(_headline(arch, prefix, document)))
    for path in sorted(metrics_dir.rglob("*")):
        if path.is_file():
            relative = path.parent.relative_to(metrics_dir)
            client.log_artifact(run_id, str(path), str(Path("evaluate") / relative))
    return run_id, benchmark


def _show_only(client, experiment_id: str, benchmark: str, arch: str, run_id: str) -> None:
    """Make RUN_ID the arch's row in the benchmark's table (comparison_view): a forced
    rerun trains and evaluates into new runs of the same benchmark, and metrics/ARCH holds
    the last evaluation's figures."""
    shown = client.search_runs([experiment_id], (
        f"tags.`{TAG_BENCHMARK}` = '{benchmark}' and tags.`{TAG_ARCH}` = '{arch}' "
        f"and tags.`{TAG_SHOWN}` = 'true'"))  # fmt: skip
    for run in shown:
        if run.info.run_id != run_id:
            client.set_tag(run.info.run_id, TAG_SHOWN, "false")
    client.set_tag(run_id, TAG_SHOWN, "true")


def _in_store(client, run_id: str, model_dir: Path) -> bool:
    """Whether this store holds the run a model's mlflow.json names. A model pulled from a
    team's DVC remote names a run in the store of whoever trained it: what is logged of it
    here then goes to a new run rather than failing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        warnings.warn(
            f"{model_dir / RUN_FILE} names MLflow run {run_id}, which "
            f"{mlflow.get_tracking_uri()} does not hold (the model was trained against another "
            f"store, e.g. it came with `dvc pull`); logging to a new run here",
            stacklevel=3,
        )  # fmt: skip
        return False
    return True


def _headline(arch: str, prefix: str, document: dict) -> dict[str, float]:
    """What the parent run shows of an arch, so the runs list compares the three without
    expanding it: `segformer_test_miou` with its interval, damage mIoU, Dice, img/s."""
    low, high = document["miou_ci95"]
    values = {f"{arch}_{prefix}_{key}": float(document[key]) for key in HEADLINE}
    values.update({f"{arch}_{prefix}_miou_ci95_low": low, f"{arch}_{prefix}_miou_ci95_high": high})
    return values


def log_report(cfg: TrackingConfig, folder: Path, models: Path) -> list[str]:
    """Log a report folder (`heritageseg report`'s reports/) into the parent run of each
    benchmark the trained models belong to (models/*/mlflow.json); the parent run ids."""
    from mlflow.tracking import MlflowClient

    experiment_id = connect(cfg)
    client = MlflowClient()
    parents = set()
    for model_dir in sorted(models.iterdir()):
        saved = read_run_file(model_dir)
        if saved is None:
            continue
        if _in_store(client, saved["parent_run_id"], model_dir):
            parents.add(saved["parent_run_id"])
        elif found := find_parent(experiment_id, saved["benchmark"]):  # made by evaluate here
            parents.add(found)
    parents = sorted(parents)
    for parent in parents:
        client.log_artifacts(parent, str(folder), "report")
    return parents


def log_benchmark_run(cfg: TrackingConfig, name: str, metrics: dict[str, float],
                      files: list[Path]) -> str:  # fmt: skip
    """A standalone run of a benchmark command (e.g. `bench infer`): metrics and files."""
    from mlflow.tracking import MlflowClient

    experiment_id = connect(cfg)  # sets the tracking URI the client below must use
    client = MlflowClient()
    run = client.create_run(experiment_id, run_name=name, tags=run_tags(name, None))
    client.log_batch(run.info.run_id, metrics=_metrics(metrics))
    for path in files:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def metrics_prefix(file_name: str, document: dict) -> str:
    """test / test_native (val / val_native): the metric names' prefix for a document."""
    split = document.get("split", "test")
    return split if file_name == METRICS_FILE else f"{split}_native"


def _log_metrics_document(client, run_id: str, document: dict, prefix: str) -> None:
    import numpy as np

    from heritageseg.stages.pictures import confusion_heatmap

    scalars = {f"{prefix}_{k}": float(v) for k, v in document.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
    low, high = document["miou_ci95"]
    scalars.update({f"{prefix}_miou_ci95_low": low, f"{prefix}_miou_ci95_high": high})
    client.log_batch(run_id, metrics=_metrics(scalars))
    table = {"class": list(document["per_class"])}
    for key in ("iou", "dice", "precision", "recall", "f1", "support", "present"):
        table[key] = [entry[key] for entry in document["per_class"].values()]
    client.log_table(run_id, table, f"evaluate/{prefix}_per_class.json")
    client.log_dict(run_id, {"classes": table["class"], "rows": "ground truth",
                             "columns": "prediction", "matrix": document["confusion_matrix"]},
                    f"evaluate/{prefix}_confusion_matrix.json")  # fmt: skip
    _log_png(client, run_id, f"evaluate/{prefix}_confusion_matrix.png", confusion_heatmap(
        np.asarray(document["confusion_matrix"]),
        f"{document['arch']} {document['split']}: mIoU {100 * document['miou']:.1f}%",
    ))  # fmt: skip


def _log_png(client, run_id: str, artifact: str, png: bytes) -> None:
    folder, name = artifact.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as temp:
        (Path(temp) / name).write_bytes(png)
        client.log_artifact(run_id, str(Path(temp) / name), folder)


# ---------------------------------------------------------------- studies


def log_study(cfg: TrackingConfig, params_file: Path, raw: Path, summary: dict,
              results: list[dict], folder: Path) -> str:  # fmt: skip
    """One parent run per study (tagged with the benchmark id of its params and data) with
    the summary figures as its metrics, so the chart view compares architectures without
    expanding anything; one child per (arch, seed, fold), tagged with all three. A child
    already logged from the same result is kept, a stale one replaced, a failed run logged
    FAILED with its error. Returns the parent's id."""
    from mlflow.tracking import MlflowClient

    experiment_id = connect(cfg)
    manifest = raw / MANIFEST
    study = benchmark_id(params_file, manifest)
    client = MlflowClient()
    parent = parent_run(experiment_id, study, role="study", manifest=manifest)
    children = {run.info.run_name: run for run in client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=5000)}  # fmt: skip
    for result in results:
        _log_study_child(client, experiment_id, parent, study, children, result, manifest)
    for failure in summary.get("failures", []):
        _log_study_child(client, experiment_id, parent, study, children, failure, manifest)
    client.log_batch(parent, metrics=_metrics(_study_metrics(summary)))
    client.log_artifacts(parent, str(folder), "study")
    return parent


def _log_study_child(client, experiment_id: str, parent: str, study: str, children: dict,
                     result: dict, manifest: Path) -> None:  # fmt: skip
    from heritageseg.stages.study import StudyRun

    run = StudyRun(result["arch"], result["seed"], result["fold"])
    fingerprint = result.get("fingerprint", "failed")
    old = children.get(run.name)
    if old is not None and old.data.tags.get(TAG_FINGERPRINT) == fingerprint:
        return  # logged from this very result already
    if old is not None:
        client.delete_run(old.info.run_id)
    tags = {**run_tags("study", manifest), "mlflow.parentRunId": parent, TAG_STUDY: study,
            TAG_ROLE: "study-run", TAG_ARCH: run.arch, "heritageseg.seed": str(run.seed),
            "heritageseg.fold": run.fold, TAG_FINGERPRINT: fingerprint}  # fmt: skip
    child = client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
    log_params(child, {"arch": run.arch, "train.seed": str(run.seed), "fold": run.fold})
    if "error" in result:
        client.set_tag(child, "heritageseg.error", result["error"][-4000:])
        client.set_tag(child, "heritageseg.log", str(result.get("log")))
        client.set_terminated(child, status="FAILED")
        return
    low, high = result["miou_ci95"]
    client.log_batch(child, metrics=_metrics({
        "test_miou": result["miou"], "test_miou_ci95_low": low, "test_miou_ci95_high": high,
        "test_miou_damage": result["miou_damage"], "epochs_run": result["epochs_run"],
        "best_epoch": result["best_epoch"],
        **{f"test_iou_{name}": iou for name, iou in result["per_class_iou"].items()
           if iou is not None},
    }))  # fmt: skip
    client.set_terminated(child)


def _study_metrics(summary: dict) -> dict[str, float]:
    """The parent's metrics: each architecture's mean and std, each pair's difference."""
    metrics = {}
    for arch, a in summary["archs"].items():
        metrics[f"{arch}_test_miou_mean"] = a["miou_mean"]
        metrics[f"{arch}_test_miou_std"] = a["miou_std"]
        metrics[f"{arch}_runs"] = a["runs"]
    for pair in summary["comparisons"]:
        low, high = pair["ci95"]
        name = f"{pair['a']}_minus_{pair['b']}"
        metrics.update({f"{name}_miou": pair["difference"], f"{name}_ci95_low": low,
                        f"{name}_ci95_high": high})  # fmt: skip
    metrics["failed_runs"] = len(summary.get("failures", []))
    return metrics
