"""Every path and file name of the pipeline, spelled once.

The folders are the CLI's defaults and the paths in `dvc.yaml` (tests/test_paths.py holds
the two together); the file names are what each stage writes inside its folder. A module
that reads or writes one of these imports it from here.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

# ------------------------------------------------------------ folders of the pipeline
PARAMS_CHECKED = Path("data/params.ok")  # validate: the first stage, on which ingest depends
RAW = Path("data/raw")  # ingest: parquet shards in the ARTeFACT schema
SPLITS = Path("data/splits")  # split: split.csv and the leave-one-out folds
CACHE = Path("data/cache")  # prepare: uint8 memmap arrays
CLASS_WEIGHTS = Path("data/class_weights.json")  # weights
MODELS = Path("models")  # train: models/ARCH/
METRICS = Path("metrics")  # evaluate: metrics/ARCH/
LOCO = METRICS / "loco"  # loco: metrics/loco/BY/ARCH/
STUDY = METRICS / "study"  # study: one result per (arch, seed, fold) and the summary
STUDY_WORK = MODELS / "study"  # study: each run's training (resumable) and fold cache view
REPORTS = Path("reports")  # report
INFERENCE_REPORT = REPORTS / "inference.md"  # bench infer (+ .json beside it)
GPU_REPORT = REPORTS / "gpu.md"  # bench gpu (+ .json beside it)
MODEL_CARD = REPORTS / "model_card.md"  # promote: the card of the version it decided on

# ------------------------------------------------------------ data/raw
MANIFEST = "manifest.json"
REJECTS = "rejects.csv"
FOLDER_METADATA = "metadata.csv"  # the folder source's record list (input, not output)

# ------------------------------------------------------------ data/splits
SPLIT_TABLE = "split.csv"
FOLD_BY = ("content", "material")  # what leave-one-out can hold out


def fold_table(by: str) -> str:
    """The fold file of leave-one-`by`-out (`lo_content.csv`, `lo_material.csv`)."""
    return f"lo_{by}.csv"


# ------------------------------------------------------------ data/cache
CACHE_IMAGES = "images.npy"
CACHE_MASKS = "masks.npy"
CACHE_INDEX = "index.csv"
CACHE_INFO = "cache.json"

# ------------------------------------------------------------ models/ARCH
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
RESUME = "resume"  # the last epoch's full training state (a folder)
CANDIDATE = "candidate"  # a running training's best weights and history: published at its end
HISTORY = "history.csv"
TRAIN_METRICS = "train_metrics.json"
RUN_FILE = "mlflow.json"  # the MLflow run that trained it
ONNX_GRAPH = "model.onnx"
INT8_GRAPH = "model.int8.onnx"

# ------------------------------------------------------------ metrics/ARCH
METRICS_FILE = "metrics.json"  # at the prepared (training) size
NATIVE_METRICS_FILE = "metrics_native.json"  # at full resolution
RESOLUTION_FILES = {"prepared": METRICS_FILE, "native": NATIVE_METRICS_FILE}
PER_IMAGE = "per_image.npz"
PER_CLASS = "per_class.csv"
PLOTS = "plots"

# ------------------------------------------------------------ reports
BENCHMARK_MD = "benchmark.md"
INDEX_HTML = "index.html"
COMPARISONS = "comparisons.json"
FIGURES = "figures"

# ------------------------------------------------------------ metrics/loco/BY/ARCH
LOCO_SUMMARY = "summary.json"
LOCO_SUMMARY_MD = "summary.md"

# ------------------------------------------------------------ metrics/study
STUDY_RUNS = "runs"  # RUN.json per (arch, seed, fold), RUN = study.run_name(...)
STUDY_SUMMARY = "summary.json"
STUDY_MD = "study.md"
STUDY_FAILURES = "failures.json"  # the runs of the last study that ended without a result
STUDY_FOLD_PLOT = "folds.png"
