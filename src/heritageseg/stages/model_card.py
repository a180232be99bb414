"""The model card of a registered version: what a conservator or a reviewer reads before
trusting the Production model — its use, its data, its scores with their intervals and the
floor it has to clear, the classes it never learned, how it was trained, why it was promoted.

Built from the files the pipeline wrote for the architecture (data/raw/manifest.json,
models/ARCH, metrics/ARCH), so it says exactly what the benchmark measured.
"""

from __future__ import annotations

from pathlib import Path

from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.paths import CONFIG, MANIFEST
from heritageseg.core.readers import read_json
from heritageseg.core.rebuild import rebuild_hint
from heritageseg.nn.metrics import majority_baseline_miou
from heritageseg.nn.models import family
from heritageseg.stages.results import read_metrics, read_training

INTENDED_USE = (
    "Segmenting damage in digitised heritage artworks and analogue media (paintings, "
    "manuscripts, mosaics, photographs, film) into the 16 ARTeFACT classes, to map where a "
    "conservator should look and to measure damaged areas (`heritageseg predict`). It is an "
    "aid to a condition assessment, not a replacement for one: its scores below are what to "
    "expect on material like its test split, and a class it never learned is never found."
)


def model_card(name: str, version: str, arch: str, *, raw: Path, models: Path, metrics: Path,
               decision: str) -> str:  # fmt: skip
    """The card of `name` version `version` (arch `arch`) as Markdown."""
    training = read_training(models / arch)
    if training is None:
        raise HeritagesegError(f"{models / arch}: not trained, no model card to write")
    config = read_json(models / arch / CONFIG, rebuild_hint("model", arch))
    documents = read_metrics(metrics / arch)
    manifest = read_json(raw / MANIFEST, rebuild_hint("manifest"))
    lines = [f"# {name} v{version}: model card", "", "## Intended use", "", INTENDED_USE, ""]
    lines += _data_lines(manifest, config)
    lines += _metrics_lines(documents)
    lines += _class_lines(documents)
    lines += _training_lines(arch, config, training)
    lines += ["## Promotion", "", decision, ""]
    return "\n".join(lines)


def _data_lines(manifest: dict, config: dict) -> list[str]:
    source = manifest.get("source", {})
    kind = (
        source.get("kind", source.get("source", "unknown")) if isinstance(source, dict) else source
    )
    splits = config.get("cache", {}).get("rows_per_split", {})
    split = ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
    return [
        "## Training data",
        "",
        f"- source: {kind} ({manifest.get('format', 'artefact-parquet')})",
        f"- records: {manifest['records']} (rejected at ingest: {manifest.get('rejected', 0)})",
        f"- manifest checksum (sha256): `{manifest['checksum']}`",
        f"- split (grouped by source image, stratified by content): {split or 'unknown'}",
        "",
    ]


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _metrics_lines(documents: dict[str, dict]) -> list[str]:
    lines = ["## Test metrics", "",
             "| resolution | mIoU [95% CI] | damage mIoU | Dice | pixel acc. | no-model floor |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for resolution, document in documents.items():
        low, high = document["miou_ci95"]
        floor = majority_baseline_miou(document["confusion_matrix"])
        lines.append(
            f"| {resolution} | {_pct(document['miou'])} [{100 * low:.2f}, {100 * high:.2f}] | "
            f"{_pct(document['miou_damage'])} | {_pct(document['dice'])} | "
            f"{_pct(document['pixel_accuracy'])} | {_pct(floor)} |"
        )
    lines += ["", "The floor labels every scored pixel with the commonest class, no model; the "
              "interval is a bootstrap over test images.", ""]  # fmt: skip
    return lines


def _class_lines(documents: dict[str, dict]) -> list[str]:
    resolutions = list(documents)
    lines = ["## IoU per class", "", "| class | " + " | ".join(resolutions) + " |",
             "|---|" + "---|" * len(resolutions)]  # fmt: skip
    never = []
    for name in CLASS_NAMES:
        entries = [documents[r]["per_class"][name] for r in resolutions]
        cells = [_pct(e["iou"]) if e["present"] else "absent" for e in entries]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if any(e["support"] > 0 for e in entries) and all(e["iou"] == 0 for e in entries):
            never.append(name)
    learned = ", ".join(never) if never else "none"
    lines += ["", f"Never learned (in the test truth, IoU 0 at every resolution): {learned}.", ""]
    return lines


def _training_lines(arch: str, config: dict, training: dict) -> list[str]:
    model = config.get("model", {})
    return [
        "## Training",
        "",
        f"- architecture: {arch} ({family(model.get('encoder', ''))}), encoder "
        f"{model.get('encoder')} ({model.get('encoder_weights') or 'random init'}), decoder "
        f"{model.get('decoder')}, head {model.get('head')}, {config.get('params_m', 0):.1f} M "
        "parameters",
        f"- input {model.get('image_size')} px, batch {model.get('batch_size')}, lr "
        f"{config.get('lr')}, precision {config.get('precision')}",
        f"- epochs run {training['epochs_run']}, best epoch {training['best_epoch']} (val mIoU "
        f"{_pct(training['best_val_miou'])}), {training['train_seconds']:.0f} s",
        "",
    ]
