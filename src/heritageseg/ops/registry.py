"""The model registry: log the pyfunc model, register it, promote behind a gate, roll back.

Each architecture is registered as `heritageseg-<arch>`, with its test metrics, benchmark and
run as version tags. Production is the alias `production` (and, while this MLflow still has
stages, stage `Production`, the previous one archived). The order of production versions
is kept in a registered-model tag, so a rollback knows which version came before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from heritageseg.core.config import PredictConfig, TrackingConfig
from heritageseg.core.paths import CONFIG, WEIGHTS
from heritageseg.core.trained import read_model_config
from heritageseg.ops.tracking import (
    PRODUCTION,
    TAG_ARCH,
    TAG_BENCHMARK,
    TrackingError,
    connect,
    find_parent,
    metrics_prefix,
    model_name,
    tracking_uri,
)

GATE_METRIC = "test_miou"
_HISTORY = "heritageseg.production_history"
_REQUIREMENTS = ("torch", "segmentation-models-pytorch", "timm", "safetensors", "numpy",
                 "pandas", "pillow", "pyarrow", "pyyaml", "tqdm", "mlflow", "onnx",
                 "onnxruntime")  # fmt: skip


def _requirements() -> list[str]:
    found = []
    for name in _REQUIREMENTS:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(name)
    return found


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema([ColSpec("string", "mask"), ColSpec("long", "height"),
                        ColSpec("long", "width")]),
    )  # fmt: skip


def log_model(
    run_id: str, arch: str, model_dir: Path, predict: PredictConfig, register: bool,
    cache: Path | None = None,
):  # fmt: skip
    """Log the pyfunc model (weights, config, code, the ONNX graphs of these weights, and the
    `predict` settings it serves with: its window and pixel limit) into the run; register it
    if asked. The int8 graph is calibrated and checked on `cache` (none without it).
    Returns the registered ModelVersion, or None."""
    import mlflow

    from heritageseg.core.fileio import write_json
    from heritageseg.infer.backends import serving_graphs
    from heritageseg.infer.serving import GRAPH_ARTIFACTS, encode_image
    from heritageseg.nn.models import fixed_input_size

    package = Path(__file__).resolve().parents[1]  # the heritageseg package, shipped as code
    example = pd.DataFrame({"image": [encode_image(np.full((40, 56, 3), 128, np.uint8))]})
    artifacts = {"weights": str(model_dir / WEIGHTS),
                 "config": str(model_dir / CONFIG)}  # fmt: skip
    encoder = read_model_config(model_dir / CONFIG).encoder
    with tempfile.TemporaryDirectory() as temp, mlflow.start_run(run_id=run_id):
        graphs, checks = serving_graphs(model_dir, cache, Path(temp))
        artifacts |= {GRAPH_ARTIFACTS[backend]: str(graph) for backend, graph in graphs.items()}
        serving = Path(temp) / "serving.json"
        write_json(serving, {"arch": arch, "fixed_input_size": fixed_input_size(encoder),
                             **checks, **dataclasses.asdict(predict)})  # fmt: skip
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "infer" / "pyfunc_model.py"),
            artifacts={**artifacts, "serving": str(serving)},
            code_paths=[str(package)],
            signature=_signature(),
            input_example=example,
            pip_requirements=_requirements(),
            registered_model_name=model_name(arch) if register else None,
        )  # fmt: skip
    if not register:
        return None
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_model_version(model_name(arch), str(info.registered_model_version))


def tag_version(version, values: dict[str, str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for key, value in values.items():
        client.set_model_version_tag(version.name, version.version, key, value)


def register_evaluation(
    cfg: TrackingConfig, run_id: str, arch: str, model_dir: Path, documents: dict[str, dict],
    benchmark: str, predict: PredictConfig, cache: Path,
) -> str | None:  # fmt: skip
    """Log + register the model with its metrics as version tags; the version number."""
    version = log_model(run_id, arch, model_dir, predict, cfg.register, cache)
    if version is None:
        return None
    tags = {TAG_ARCH: arch, TAG_BENCHMARK: benchmark, "run_id": run_id}
    for name, document in documents.items():
        prefix = metrics_prefix(name, document)
        for key in ("miou", "miou_damage", "dice", "pixel_accuracy", "f1", "throughput_img_s"):
            tags[f"{prefix}_{key}"] = f"{document[key]:.6f}"
    tag_version(version, tags)
    return str(version.version)


# ---------------------------------------------------------------- promotion


@dataclass(frozen=True)
class Decision:
    name: str
    candidate: str
    production: str | None  # the version in production before the decision
    candidate_miou: float
    production_miou: float | None
    promoted: bool
    forced: bool
    candidate_run: str = ""  # the MLflow run that logged the candidate

    def describe(self) -> str:
        """The decision in a sentence, for the model card."""
        production = ("none" if self.production is None
                      else f"v{self.production} at {self.production_miou:.4f}")  # fmt: skip
        gate = "promoted when its test mIoU is at least production's"
        return (f"{self.verdict}: v{self.candidate} scored test mIoU {self.candidate_miou:.4f} "
                f"against production {production} (the gate: {gate})"
                + (", forced past the gate" if self.forced else "") + ".")  # fmt: skip

    @property
    def verdict(self) -> str:
        if not self.promoted:
            return "refused"
        return "forced" if self.forced else "promoted"


def _gate_value(version) -> float:
    if GATE_METRIC not in version.tags:
        raise TrackingError(
            f"{version.name} version {version.version} has no {GATE_METRIC} tag: "
            "run `heritageseg evaluate` with tracking on before promoting"
        )
    return float(version.tags[GATE_METRIC])


def _by_alias(client, name: str, alias: str = PRODUCTION):
    """The version of `name` with `alias` (default: production), or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _history(client, name: str, current) -> list[str]:
    tags = client.get_registered_model(name).tags
    history = json.loads(tags.get(_HISTORY, "[]"))
    if current is not None and (not history or history[-1] != str(current.version)):
        history.append(str(current.version))  # an alias set by hand
    return history


def _set_production(client, name: str, version: str, history: list[str]) -> None:
    client.set_registered_model_alias(name, PRODUCTION, version)
    client.set_registered_model_tag(name, _HISTORY, json.dumps(history))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages: deprecated, still supported
        try:
            client.transition_model_version_stage(name, version, "Production", True)
        except Exception as exc:  # a future MLflow without stages: the alias is enough
            warnings.warn(f"stage Production not set ({exc}); alias {PRODUCTION} is", stacklevel=2)


def promote(cfg: TrackingConfig, arch: str, *, force: bool = False,
            version: str | None = None) -> Decision:  # fmt: skip
    """Promote the newest registered version (or `version`) of `arch` to production if its
    test mIoU is at least production's (or `force`); the decision is tagged on the version
    and on its benchmark's parent run."""
    from mlflow.tracking import MlflowClient

    name, uri = model_name(arch), tracking_uri(cfg)
    if version is not None and not version.isdigit():
        raise TrackingError(
            f"--version {version!r} is not a version of {name}: registered versions are "
            f"numbered 1, 2, ... (store {uri}); leave it out to promote the newest"
        )
    experiment_id = connect(cfg, create=False)
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise TrackingError(
            f"no version of {name} in the registry of {uri}: run `dvc repro` (train and "
            "evaluate with tracking on) first"
        )
    candidate = _pick_version(versions, version, uri)
    current = _by_alias(client, name)
    candidate_miou = _gate_value(candidate)
    production_miou = _gate_value(current) if current is not None else None
    passes = production_miou is None or candidate_miou >= production_miou
    decision = Decision(
        name,
        str(candidate.version),
        str(current.version) if current else None,
        candidate_miou,
        production_miou,
        promoted=passes or force,
        forced=force and not passes,
        candidate_run=candidate.tags.get("run_id", ""),
    )
    with _permission(name, uri):
        if decision.promoted and decision.production != decision.candidate:
            history = _history(client, name, current)
            _set_production(client, name, decision.candidate, [*history, decision.candidate])
        _record(client, experiment_id, candidate, decision)
    return decision


@contextlib.contextmanager
def _permission(name: str, uri: str):
    """A server's refusal (basic-auth) as a message naming the permission that is missing."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code != "PERMISSION_DENIED":
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
        raise TrackingError(
            f"{uri}: {user} may not promote {name}: it needs MANAGE permission on the "
            f"registered model {name} (the server: {exc.message}); ask its maintainer or the "
            "server's admin to grant it"
        ) from None


def describe_version(cfg: TrackingConfig, name: str, version: str, text: str) -> None:
    """Set a registered version's description (the UI shows it on the version's page)."""
    from mlflow.tracking import MlflowClient

    connect(cfg, create=False)
    MlflowClient().update_model_version(name, version, description=text)


def _pick_version(versions: list, version: str | None, uri: str):
    """The newest of `versions`, or the one numbered `version`."""
    if version is None:
        return max(versions, key=lambda v: int(v.version))
    found = _numbered(versions, version)
    if found is None:
        raise TrackingError(
            f"{versions[0].name} has no version {version} in the registry of {uri} "
            f"(its versions: {_numbers(versions)})"
        )
    return found


def _numbered(versions: list, number: str):
    """The version numbered `number`, or None."""
    return next((v for v in versions if int(v.version) == int(number)), None)


def check_registered(cfg: TrackingConfig, model_uri: str) -> None:
    """A registry URI (`models:/NAME@alias`, `models:/NAME/N`) names a version that the
    store has. A URI that needs the store (`models:/`, `runs:/`) connects to it without
    creating it; other URIs (a folder) are left to the loader."""
    from mlflow.tracking import MlflowClient

    from heritageseg.stages.predict import registry_reference

    if not model_uri.startswith(("models:/", "runs:/")):
        return
    connect(cfg, create=False)
    reference = registry_reference(model_uri)
    if reference is None:
        return
    name, alias, number = reference
    missing = _missing_version(MlflowClient(), name, alias, number)
    if missing:
        raise TrackingError(
            f"model {model_uri}: {name} has {missing} in the MLflow store {tracking_uri(cfg)}; "
            "register and promote one (`heritageseg evaluate`, `heritageseg promote`) or "
            "point MLFLOW_TRACKING_URI at the store that has it"
        )


def _missing_version(client, name: str, alias: str | None, number: str | None) -> str | None:
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        return "no registered version"
    if number is not None and _numbered(versions, number) is None:
        return f"no version {number} (its versions: {_numbers(versions)})"
    if alias is not None and _by_alias(client, name, alias) is None:
        return f"no version with alias {alias!r}"
    return None


def _numbers(versions: list) -> str:
    return ", ".join(sorted((str(v.version) for v in versions), key=int))


def _record(client, experiment_id: str, candidate, decision: Decision) -> None:
    tags = {
        "promotion.decision": decision.verdict,
        "promotion.candidate_test_miou": f"{decision.candidate_miou:.6f}",
        "promotion.production_test_miou": "none"
        if decision.production_miou is None
        else f"{decision.production_miou:.6f}",
        "promotion.production_version": decision.production or "none",
    }
    tag_version(candidate, tags)
    parent = find_parent(experiment_id, candidate.tags.get(TAG_BENCHMARK, ""))
    if parent is not None:
        arch = candidate.tags.get(TAG_ARCH, decision.name)
        for key, value in {**tags, "promotion.candidate_version": decision.candidate}.items():
            client.set_tag(parent, f"{arch}.{key}", value)


def rollback(cfg: TrackingConfig, arch: str) -> tuple[str, str]:
    """Give production back to the version before the current one: (from, to)."""
    from mlflow.tracking import MlflowClient

    connect(cfg, create=False)
    client = MlflowClient()
    name = model_name(arch)
    current = _by_alias(client, name)
    if current is None:
        raise TrackingError(f"{name} has no {PRODUCTION} version: nothing to roll back")
    history = _history(client, name, current)
    if len(history) < 2:
        raise TrackingError(f"{name} v{current.version} is the first production version: "
                            "there is none to roll back to")  # fmt: skip
    previous = history[-2]
    _set_production(client, name, previous, history[:-1])
    client.set_model_version_tag(name, current.version, "promotion.rolled_back", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with contextlib.suppress(Exception):
            client.transition_model_version_stage(name, current.version, "Archived")
    return str(current.version), previous
