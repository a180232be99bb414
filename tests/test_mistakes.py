"""Every mistake a new user makes gets a clear message: one table, one row per mistake.

Each row breaks a copy of a small project (a params value, a file, a flag), runs one
command in it as the CLI does, and checks that the command fails with a message that names
the key or the file, with no traceback, and that no output the command was not asked to
rewrite was lost.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from heritageseg.cli import main

from .conftest import TINY_SIZE

Breaker = Callable[[Path], None]


@dataclass(frozen=True)
class Mistake:
    """One mistake: how to break the project, what to run, what the message must name."""

    name: str
    argv: tuple[str, ...]
    names: tuple[str, ...]  # substrings the message must contain
    breaks: Breaker = lambda root: None
    project: str = "tiny"  # "tiny": data stages done; "trained": + models/segformer


# ------------------------------------------------------------------ breakers


def set_param(key: str, value) -> Breaker:
    """Set `train.convnext.batch_size`-style `key` in the project's params.yaml."""

    def breaks(root: Path) -> None:
        path = root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        *sections, last = key.split(".")
        node = params
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
        path.write_text(yaml.safe_dump(params))

    return breaks


def truncate(relative: str, keep: float = 0.5) -> Breaker:
    def breaks(root: Path) -> None:
        path = root / relative
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return breaks


def garbage(relative: str, size: int = 512) -> Breaker:
    def breaks(root: Path) -> None:
        (root / relative).write_bytes(os.urandom(size))

    return breaks


def empty(relative: str) -> Breaker:
    def breaks(root: Path) -> None:
        (root / relative).write_bytes(b"")

    return breaks


def remove(relative: str) -> Breaker:
    def breaks(root: Path) -> None:
        path = root / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return breaks


# --- untrusted inputs, registry and outputs: breakers

FOLDER_SOURCE = "incoming"  # a folder source (metadata.csv + PNGs) inside the project copy
_HELD_LOCKS = contextlib.ExitStack()  # locks a row holds while its command runs


def folder_source(files: dict[str, bytes | None] | None = None, **row: str) -> Breaker:
    """Write a two-record folder source under FOLDER_SOURCE: `row` changes the first record's
    metadata.csv row, `files` (path relative to the source: bytes) adds or replaces files."""

    def breaks(root: Path) -> None:
        from heritageseg.core.classes import colourise
        from heritageseg.data.shards import encode_png

        source = root / FOLDER_SOURCE
        image = np.full((16, 24, 3), 90, np.uint8)
        mask = np.zeros((16, 24), np.uint8)
        rows = []
        for record in ("crecordone", "crecordtwo"):
            for column, data in (("image", encode_png(image)),
                                 ("annotation", encode_png(mask, mode="L")),
                                 ("annotation_rgb", encode_png(colourise(mask)))):  # fmt: skip
                (source / column).mkdir(parents=True, exist_ok=True)
                (source / column / f"{record}.png").write_bytes(data)
            rows.append({"id": record, "material": "Paper", "content": "Line art",
                         "image_path": f"image/{record}.png"})  # fmt: skip
        rows[0].update(row)
        for relative, data in (files or {}).items():
            path = source / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        with (source / "metadata.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    return breaks


# broken files: one reader per kind of file

DAMAGES = {"truncated": truncate, "garbage": garbage, "empty": empty}


def both(*breakers: Breaker) -> Breaker:
    def breaks(root: Path) -> None:
        for breaker in breakers:
            breaker(root)

    return breaks


def registered(arch: str) -> Breaker:
    """A version of heritageseg-ARCH in the test store (MLFLOW_TRACKING_URI), without the
    metrics evaluate tags it with: enough for promote to look for versions."""

    def breaks(root: Path) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from heritageseg.core.config import TrackingConfig
        from heritageseg.ops.tracking import connect, model_name

        connect(TrackingConfig())
        client = MlflowClient()
        with contextlib.suppress(MlflowException):  # registered by an earlier row
            client.create_registered_model(model_name(arch))
        client.create_model_version(model_name(arch), source=str(root))

    return breaks


_EVALUATED: dict[str, Path] = {}


def evaluated(root: Path) -> None:
    """metrics/segformer of the trained project, as `evaluate` writes it: evaluated once, in
    a copy of the first project given, and copied into each one after."""
    if "segformer" not in _EVALUATED:
        source = Path(shutil.copytree(root, root.parent / "evaluated", symlinks=True))
        code, output = run_cli(source, ("evaluate", "--arch", "segformer"))
        assert code == 0, output
        _EVALUATED["segformer"] = source / "metrics" / "segformer"
    shutil.copytree(_EVALUATED["segformer"], root / "metrics" / "segformer")


def tracked(root: Path) -> None:
    """Tracking on, and models/segformer/mlflow.json as training with tracking on writes it."""
    set_param("tracking.enabled", True)(root)
    run = {"run_id": "0" * 32, "parent_run_id": "1" * 32, "experiment_id": "1",
           "benchmark": "0" * 12, "tracking_uri": "sqlite:///mlruns/mlflow.db"}  # fmt: skip
    (root / "models" / "segformer" / "mlflow.json").write_text(json.dumps(run))


def rewrite_json(relative: str, change: Callable[[dict], None]) -> Breaker:
    """A JSON file that parses but is not what its writer writes."""

    def breaks(root: Path) -> None:
        path = root / relative
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))

    return breaks


def image_and_store(root: Path) -> None:
    """An image to predict, and the test store created (so only the model is missing)."""
    from heritageseg.core.config import TrackingConfig
    from heritageseg.ops.tracking import connect

    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(root / "photo.png")
    connect(TrackingConfig())


def training_in_progress(arch: str) -> Breaker:
    """Another training of ARCH holds its folder's lock (held until the session ends)."""

    def breaks(root: Path) -> None:
        from heritageseg.core.fileio import exclusive

        _HELD_LOCKS.enter_context(exclusive(root / "models" / arch, "training"))

    return breaks


def drop(key: str) -> Callable[[dict], None]:
    return lambda document: document.pop(key)


def drop_last_weight(document: dict) -> None:
    document["weights"].pop()


def save_array(relative: str, shape: tuple[int, ...], dtype: str = "uint8") -> Breaker:
    """A whole .npy file, but of another shape or type than the cache index says."""

    def breaks(root: Path) -> None:
        np.save(root / relative, np.zeros(shape, dtype=dtype))

    return breaks


def drop_column(relative: str, column: str) -> Breaker:
    def breaks(root: Path) -> None:
        path = root / relative
        lines = path.read_text().splitlines()
        position = lines[0].split(",").index(column)
        cells = [line.split(",") for line in lines]
        kept = [",".join(v for i, v in enumerate(row) if i != position) for row in cells]
        path.write_text("\n".join(kept) + "\n")

    return breaks


# ------------------------------------------------------------------ the table
# Sections by kind of mistake; each adds its rows to MISTAKES.

MISTAKES: list[Mistake] = []

# --- params: values out of range, missing files (heritageseg.core.config)

MISTAKES += [
    Mistake(
        "params file missing", ("--params", "param.yaml", "ingest"), ("param.yaml", "not found")
    ),
    Mistake("params file is a folder", ("--params", "data", "split"), ("data", "cannot read")),
    Mistake(
        "params file not YAML",
        ("ingest",),
        ("params.yaml", "not valid YAML"),
        breaks=lambda root: (root / "params.yaml").write_text("ingest: {n: [\n"),
    ),
    Mistake(
        "a section that is not a mapping",
        ("split",),
        ("params.yaml", "train: expected a mapping"),
        breaks=lambda root: (root / "params.yaml").write_text("train: 3\n"),
    ),
    Mistake(
        "a misspelt section",
        ("report",),
        ("unknown key(s) trian",),
        breaks=lambda root: (root / "params.yaml").write_text("trian: {epochs: 2}\n"),
    ),
    Mistake("unknown profile", ("profile", "papr"), ("papr", "laptop", "paper-native")),
    Mistake(
        "slurm profile file missing",
        ("train", "--arch", "segformer", "--executor", "slurm", "--profile", "slurm/none.yaml"),
        ("slurm/none.yaml",),
    ),
]


def _out_of_range(key: str, value, argv: tuple[str, ...], *names: str) -> Mistake:
    return Mistake(f"{key}: {value!r}", argv, (f"{key}={value!r}", *names), set_param(key, value))


TRAIN, EVALUATE = ("train", "--arch", "convnext"), ("evaluate", "--arch", "segformer")
MISTAKES += [
    _out_of_range("train.base_batch_size", 0, TRAIN, ">= 1"),
    _out_of_range("train.accumulate", 0, TRAIN, ">= 1"),
    _out_of_range("train.epochs", 0, TRAIN, ">= 1"),
    _out_of_range("train.epochs", -3, TRAIN),
    _out_of_range("train.base_lr", -0.002, TRAIN, "> 0"),
    _out_of_range("train.weight_decay", -0.1, TRAIN),
    _out_of_range("train.clip_grad_norm", 0.0, TRAIN),
    _out_of_range("train.convnext.batch_size", -4, TRAIN, ">= 1"),
    _out_of_range("train.segformer.image_size", 100, TRAIN, "multiple of 32"),
    _out_of_range("train.maxvit.lr", 0.0, TRAIN),
    _out_of_range("train.scheduler", "cosine", TRAIN, "onecycle"),
    _out_of_range("train.loss.focal_gamma", -1.0, TRAIN),
    _out_of_range("train.num_workers", -1, TRAIN),
    _out_of_range("augment.hflip", 1.5, TRAIN, "<= 1.0"),
    _out_of_range("augment.blur_limit", 1, TRAIN, ">= 3"),
    _out_of_range("evaluate.batch_size", 0, EVALUATE, ">= 1"),
    _out_of_range("evaluate.bootstrap", 0, EVALUATE, ">= 1"),
    Mistake(
        "evaluate.tile_overlap as large as the model's tile",
        EVALUATE,
        (f"evaluate.tile_overlap={TINY_SIZE}", f"< {TINY_SIZE} (tile)"),
        set_param("evaluate.tile_overlap", TINY_SIZE),
        project="trained",
    ),
    _out_of_range("evaluate.backend", "tensorrt", EVALUATE, "onnx"),
    _out_of_range("ingest.background_fraction", 2.0, ("ingest",)),
    _out_of_range("ingest.n", 0, ("ingest",)),
    _out_of_range("ingest.seed", -1, ("ingest",)),
    _out_of_range("prepare.tile_overlap", 400, ("prepare",), "< tile_size"),
    _out_of_range("prepare.size", 4, ("prepare",), ">= 8"),
    _out_of_range("weights.max_ratio", 0.5, ("weights",), ">= 1.0"),
    _out_of_range("split.test", -0.1, ("split",), ">= 0.0"),
    Mistake(
        "split fractions sum to 1.2",
        ("split",),
        ("split.train/val/test=(0.7, 0.15, 0.35)", "sum to 1"),
        set_param("split.test", 0.35),
    ),
    Mistake(
        "all loss terms zero",
        TRAIN,
        ("train.loss.dice/ce/focal", "at least one"),
        lambda root: [set_param(f"train.loss.{k}", 0.0)(root) for k in ("dice", "ce")],
    ),
    Mistake("--n 0", ("ingest", "--n", "0"), ("--n=0", ">= 1")),
]

# --- broken files: one reader per kind of file

TRAIN = ("train", "--arch", "segformer")
EVALUATE = ("evaluate", "--arch", "segformer")
RETRAIN = "heritageseg train --arch segformer --fresh"
UNTRACKED = set_param("tracking.enabled", False)
BROKEN_FILES = [  # (file, project, the command that reads it, its rebuild command, setup)
    ("data/raw/manifest.json", "tiny", ("summary",), "dvc repro -f -s ingest", None),
    ("data/splits/split.csv", "tiny", ("prepare",), "dvc repro -f -s split", None),
    ("data/splits/lo_content.csv", "tiny", ("loco", "--arch", "segformer", "--by", "content"),
     "dvc repro -f -s split", None),
    ("data/splits/lo_material.csv", "tiny", ("loco", "--arch", "segformer", "--by", "material"),
     "dvc repro -f -s split", None),
    ("data/cache/images.npy", "tiny", TRAIN, "dvc repro -f -s prepare", UNTRACKED),
    ("data/cache/masks.npy", "tiny", ("weights",), "dvc repro -f -s prepare", None),
    ("data/cache/index.csv", "tiny", ("weights",), "dvc repro -f -s prepare", None),
    ("data/cache/cache.json", "tiny", TRAIN, "dvc repro -f -s prepare", UNTRACKED),
    ("data/class_weights.json", "tiny", TRAIN, "dvc repro -f -s weights", UNTRACKED),
    ("models/segformer/model.safetensors", "trained", EVALUATE, RETRAIN, None),
    ("models/segformer/model.safetensors", "trained", ("export", "onnx", "--arch", "segformer"),
     RETRAIN, None),
    ("models/segformer/config.json", "trained", EVALUATE, RETRAIN, None),
    ("models/segformer/train_metrics.json", "trained", ("summary",), RETRAIN, None),
    ("models/segformer/mlflow.json", "trained", EVALUATE, RETRAIN, tracked),
    ("models/segformer/history.csv", "trained", ("report",), RETRAIN, evaluated),
    ("metrics/segformer/metrics.json", "trained", ("summary",),
     "dvc repro -f -s evaluate@segformer", evaluated),
    ("metrics/segformer/metrics_native.json", "trained", ("report",),
     "dvc repro -f -s evaluate@segformer", evaluated),
    ("metrics/segformer/per_image.npz", "trained", ("report",),
     "dvc repro -f -s evaluate@segformer", evaluated),
]  # fmt: skip
"""Every kind of file a stage reads, truncated, overwritten with random bytes or emptied."""

MISTAKES += [
    Mistake(
        f"{damage} {file} ({argv[0]})",
        argv,
        (file, rebuild),
        breaks=both(setup or (lambda root: None), DAMAGES[damage](file)),
        project=project,
    )
    for file, project, argv, rebuild, setup in BROKEN_FILES
    for damage in DAMAGES
]
MISTAKES += [  # files that parse, but do not hold what their writer writes
    Mistake(
        "images.npy of another shape than cache.json says",
        TRAIN,
        ("data/cache/images.npy", "cache.json", "dvc repro -f -s prepare"),
        breaks=both(UNTRACKED, save_array("data/cache/images.npy", (3, 8, 8, 3))),
    ),
    Mistake(
        "masks.npy of float32",
        ("weights",),
        ("data/cache/masks.npy", "uint8", "dvc repro -f -s prepare"),
        breaks=save_array("data/cache/masks.npy", (40, 64, 64), "float32"),
    ),
    Mistake(
        "cache.json lists another number of rows",
        ("weights",),
        ("data/cache/index.csv", "cache.json", "dvc repro -f -s prepare"),
        breaks=rewrite_json("data/cache/cache.json", lambda info: info.update(rows=41)),
    ),
    Mistake(
        "split.csv without its split column",
        ("prepare",),
        ("data/splits/split.csv", "split", "dvc repro -f -s split"),
        breaks=drop_column("data/splits/split.csv", "split"),
    ),
    Mistake(
        "class_weights.json with 15 weights",
        TRAIN,
        ("data/class_weights.json", "16 finite positive", "dvc repro -f -s weights"),
        breaks=both(UNTRACKED, rewrite_json("data/class_weights.json", drop_last_weight)),
    ),
    Mistake(
        "config.json without its model section",
        EVALUATE,
        ("models/segformer/config.json", "'model'", RETRAIN),
        breaks=rewrite_json("models/segformer/config.json", drop("model")),
        project="trained",
    ),
    Mistake(
        "metrics.json without miou",
        ("summary",),
        ("metrics/segformer/metrics.json", "'miou'", "dvc repro -f -s evaluate@segformer"),
        breaks=both(evaluated, rewrite_json("metrics/segformer/metrics.json", drop("miou"))),
        project="trained",
    ),
]

# --- untrusted inputs, registry and outputs

_INGEST_FOLDER = ("ingest", "--source", "folder", "--path", FOLDER_SOURCE)

MISTAKES += [
    Mistake(
        "promote: a version the registry does not have",
        ("promote", "--arch", "maxvit", "--version", "99"),
        ("heritageseg-maxvit", "no version 99", "sqlite:///"),
        breaks=registered("maxvit"),
    ),
    Mistake(
        "promote: a version that is not a number",
        ("promote", "--arch", "maxvit", "--version", "abc"),
        ("'abc'", "heritageseg-maxvit", "sqlite:///"),
    ),
    Mistake(
        "predict: a model the store does not have",
        ("predict", "photo.png", "--model", "models:/heritageseg-maxvit/7", "--out", "maps"),
        ("models:/heritageseg-maxvit/7", "sqlite:///"),
        breaks=image_and_store,
    ),
    Mistake(
        "predict outside a project folder",
        ("predict", "photo.png", "--out", "maps"),
        ("params.yaml", "not found"),
        breaks=remove("params.yaml"),
    ),
    Mistake(
        "folder source: an empty image file",
        _INGEST_FOLDER,
        ("crecordone", "zero.png", "is empty (0 bytes)"),
        breaks=folder_source({"image/zero.png": b""}, image_path="image/zero.png"),
    ),
    Mistake(
        "folder source: a path that leads outside the folder",
        _INGEST_FOLDER,
        ("crecordone", "../../elsewhere.png", "outside the source folder"),
        breaks=folder_source(
            {"../../elsewhere.png": b"not for you"}, image_path="../../elsewhere.png"
        ),
    ),
    Mistake(
        "folder source: a garbage annotation_rgb",
        _INGEST_FOLDER,
        ("crecordone", "annotation_rgb does not decode"),
        breaks=folder_source({"annotation_rgb/crecordone.png": os.urandom(300)}),
    ),
    Mistake(
        "folder source: an id that is no file name",
        _INGEST_FOLDER,
        ("../crecordone", "the id is not"),
        breaks=folder_source(id="../crecordone"),
    ),
    Mistake(
        "folder source: a material with control characters",
        _INGEST_FOLDER,
        ("crecordone", "material holds control characters"),
        breaks=folder_source(material="Paper\x1b[31m"),
    ),
    Mistake(
        "folder source: an overlong type",
        _INGEST_FOLDER,
        ("crecordone", "type has 5,000 characters"),
        breaks=folder_source(type="x" * 5000),
    ),
    Mistake(
        "train while another training writes the same folder",
        ("train", "--arch", "convnext"),
        ("models/convnext", "another training", f"pid {os.getpid()}"),
        breaks=training_in_progress("convnext"),
    ),
]


# ------------------------------------------------------------------ running a row


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and "mlruns" not in path.parts
    }


def run_cli(root: Path, argv: tuple[str, ...]) -> tuple[int, str]:
    """Run the CLI in-process in `root` as a user would; an exception escaping it is a
    traceback the user would have seen."""
    out = io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse
            code = exit_.code
        except Exception:  # the traceback is the failure being looked for
            traceback.print_exc(file=out)
            code = "traceback"
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trained_project(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project with a segformer trained for one epoch (tracking off)."""
    root = Path(shutil.copytree(tiny_project, tmp_path_factory.mktemp("trained") / "p"))
    set_param("train.epochs", 1)(root)
    set_param("tracking.enabled", False)(root)
    code, output = run_cli(root, ("train", "--arch", "segformer"))
    assert code == 0, output
    return root


def _marked(mistake: Mistake):
    """A row on the trained project needs its training: `make test-fast` leaves it out."""
    marks = [pytest.mark.training] if mistake.project == "trained" else []
    return pytest.param(mistake, marks=marks, id=mistake.name)


@pytest.mark.parametrize("mistake", [_marked(m) for m in MISTAKES])
def test_a_mistake_is_a_clear_message(mistake: Mistake, request, tmp_path: Path):
    source = request.getfixturevalue(
        "trained_project" if mistake.project == "trained" else "tiny_project"
    )
    root = Path(shutil.copytree(source, tmp_path / "p", symlinks=True))
    mistake.breaks(root)
    before = snapshot(root)
    code, output = run_cli(root, mistake.argv)
    assert code not in (0, None, "traceback"), output
    assert "Traceback" not in output, output
    for name in mistake.names:
        assert name in output, f"{name!r} not named in:\n{output}"
    after = snapshot(root)
    lost = {path for path in before if path not in after or after[path] != before[path]}
    assert not lost, f"{mistake.name}: changed or lost {sorted(lost)}"


# --- broken files: a resume state that cannot be read back is set aside


@pytest.mark.training
@pytest.mark.parametrize(
    ("name", "damage"), [("state.safetensors", "truncated"), ("state.json", "garbage")]
)
def test_a_broken_resume_state_is_set_aside(
    trained_project: Path, tmp_path: Path, name: str, damage: str
):
    root = Path(shutil.copytree(trained_project, tmp_path / "p", symlinks=True))
    model_dir = root / "models" / "segformer"
    DAMAGES[damage](f"models/segformer/resume/{name}")(root)
    broken = (model_dir / "resume" / name).read_bytes()
    code, output = run_cli(root, ("train", "--arch", "segformer"))
    assert code == 0, output
    assert "Traceback" not in output, output
    (aside,) = model_dir.glob("resume.corrupt-*")
    assert f"models/segformer/{aside.name}" in output and "starting over" in output, output
    assert (aside / name).read_bytes() == broken  # kept, for a look
    assert (model_dir / "resume" / "state.json").is_file()  # the new run's own state
