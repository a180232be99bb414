"""Plain-text tables printed at the end of `make repro`."""

from __future__ import annotations

from pathlib import Path

from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.config import ARCHS
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.paths import MANIFEST
from heritageseg.core.readers import read_json
from heritageseg.core.rebuild import rebuild_hint
from heritageseg.nn.metrics import majority_baseline_miou
from heritageseg.stages.results import read_metrics, read_training

MANIFEST_KEYS = (
    "records", "source", "shards", "checksum", "rejected", "image_size", "class_pixels",
    "content_counts", "material_counts",
)  # fmt: skip
"""What the summary reads of data/raw/manifest.json."""


def read_manifest(raw: Path) -> dict:
    path, hint = raw / MANIFEST, rebuild_hint("manifest")
    if not path.exists():
        raise HeritagesegError(f"{path} does not exist: run `dvc repro` (or make repro)")
    return read_json(path, hint, MANIFEST_KEYS)


def result_rows(models: Path, metrics: Path) -> list[dict]:
    """One row per trained architecture: its training figures and, once evaluated, the test
    scores at the prepared size (`test`) and at full resolution (`native`)."""
    rows = []
    for arch in ARCHS:
        training = read_training(models / arch)
        if training is None:
            continue
        documents = read_metrics(metrics / arch)
        keys = {"test": "prepared", "native": "native"}
        rows.append({**training, **{k: documents[r] for k, r in keys.items() if r in documents}})
    return rows


def dataset_summary(manifest: dict) -> str:
    """The ingested data set in a few lines: size, sources, class pixel shares."""
    size = manifest["image_size"]
    pixels = manifest["class_pixels"]
    labelled = sum(v for k, v in pixels.items() if k != "Background") or 1
    lines = [
        f"data set: {manifest['records']} records from {manifest['source']['kind']} "
        f"({len(manifest['shards'])} shards, checksum {manifest['checksum'][:12]}), "
        f"rejected {manifest['rejected']}",
        f"image sizes: {size['min_width']}-{size['max_width']} x "
        f"{size['min_height']}-{size['max_height']} px",
        "content: " + ", ".join(f"{k} {v}" for k, v in manifest["content_counts"].items()),
        "material: " + ", ".join(f"{k} {v}" for k, v in manifest["material_counts"].items()),
        "",
        f"{'class':<16}{'pixels':>14}{'share':>9}",
    ]
    for name in [*CLASS_NAMES, "Background"]:
        count = pixels[name]
        share = "" if name == "Background" else f"{100 * count / labelled:8.3f}%"
        lines.append(f"{name:<16}{count:>14,}{share:>9}")
    return "\n".join(lines)


def results_summary(rows: list[dict]) -> str:
    """One line per trained architecture: training figures, and test scores once evaluated."""
    header = (
        f"{'arch':<10}{'family':<8}{'encoder':<24}{'params':>8}{'val mIoU':>10}"
        f"{'test mIoU (95% CI)':>24}{'native':>9}{'train s':>9}{'img/s':>8}"
    )
    lines = [header]
    for row in rows:
        test = "-"
        if "test" in row:
            low, high = row["test"]["miou_ci95"]
            test = f"{100 * row['test']['miou']:.2f}% [{100 * low:.1f}, {100 * high:.1f}]"
        native = f"{100 * row['native']['miou']:.2f}%" if "native" in row else "-"
        lines.append(
            f"{row['arch']:<10}{row['family']:<8}{row['encoder']:<24}{row['params_m']:>7.1f}M"
            f"{100 * row['best_val_miou']:>9.2f}%{test:>24}{native:>9}"
            f"{row['train_seconds']:>9.0f}{row['train_images_per_s']:>8.1f}"
        )
    floors = baseline_line([row["test"] for row in rows if "test" in row])
    return "\n".join([*lines, floors] if floors else lines)


def baseline_line(documents: list[dict]) -> str:
    """What the test mIoU of no model at all would be, so a score can be read against it."""
    floors = sorted(
        {round(100 * majority_baseline_miou(d["confusion_matrix"]), 2) for d in documents}
    )
    if not floors:
        return ""
    shown = " / ".join(f"{f:.2f}%" for f in floors)
    return f"no model (every pixel labelled with the commonest test class): test mIoU {shown}"
