"""The report stage: every evaluated architecture side by side -> reports/.

`benchmark.md` and a self-contained `index.html` (pictures embedded, no network) are rendered
from the same blocks, so they never disagree. Pairwise differences use the paired bootstrap
over the per-image confusion matrices that `evaluate` saved, on the images both models saw.
"""

from __future__ import annotations

import base64
import html
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import atomic_dir, atomic_write_text, write_json
from heritageseg.core.paths import (
    BENCHMARK_MD,
    COMPARISONS,
    FIGURES,
    INDEX_HTML,
    METRICS_FILE,
    PER_IMAGE,
    PLOTS,
    RESOLUTION_FILES,
    STUDY_FOLD_PLOT,
    STUDY_SUMMARY,
    TRAIN_METRICS,
)
from heritageseg.core.readers import read_json
from heritageseg.core.rebuild import rebuild_hint
from heritageseg.nn.metrics import majority_baseline_miou, paired_bootstrap
from heritageseg.nn.models import family
from heritageseg.stages import pictures
from heritageseg.stages.results import read_history, read_metrics, read_per_image, read_training


@dataclass
class ArchResult:
    """What evaluate and train wrote for one architecture."""

    arch: str
    encoder: str
    training: dict
    metrics: dict[str, dict]  # resolution -> metrics.json document
    per_image: dict[str, tuple[list[str], np.ndarray]]  # resolution -> (ids, matrices)
    history: list[dict]
    plots: dict[str, Path]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, png)


def load_result(arch: str, metrics: Path, models: Path) -> ArchResult | None:
    """The architecture's files, or None when it has not been evaluated."""
    folder = metrics / arch
    if not (folder / METRICS_FILE).is_file():
        return None
    model_dir = models / arch
    training = read_training(model_dir)
    if training is None:
        raise HeritagesegError(f"{model_dir / TRAIN_METRICS} not found: run `heritageseg train`")
    documents = read_metrics(folder)
    return ArchResult(
        arch=arch,
        encoder=training["encoder"],
        training=training,
        metrics=documents,
        per_image=read_per_image(folder / PER_IMAGE, documents),
        history=read_history(model_dir, training["epochs_run"]),
        plots={p.name: p for p in sorted((folder / PLOTS).glob("*.png"))},
    )


def compare(
    results: list[ArchResult], iterations: int, seed: int
) -> dict[str, list[dict]]:  # fmt: skip
    """Paired bootstrap of mIoU(a) - mIoU(b) for every pair, per resolution."""
    out: dict[str, list[dict]] = {}
    for resolution in RESOLUTION_FILES:
        pairs = []
        for a, b in itertools.combinations(results, 2):
            if resolution not in a.per_image or resolution not in b.per_image:
                continue
            matrices_a, matrices_b = aligned(a.per_image[resolution], b.per_image[resolution])
            if len(matrices_a) == 0:
                continue
            result = paired_bootstrap(matrices_a, matrices_b, iterations, seed)
            pairs.append({"a": a.arch, "b": b.arch, **result})
        if pairs:
            out[resolution] = pairs
    return out


def aligned(a: tuple[list[str], np.ndarray], b: tuple[list[str], np.ndarray]):
    """The matrices of the images both were scored on, in a's order."""
    position_b = {image: i for i, image in enumerate(b[0])}
    keep = [(i, position_b[image]) for i, image in enumerate(a[0]) if image in position_b]
    rows_a, rows_b = [i for i, _ in keep], [j for _, j in keep]
    return a[1][rows_a], b[1][rows_b]


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _ci(document: dict) -> str:
    low, high = document["miou_ci95"]
    return f"{_pct(document['miou'])} [{_pct(low)}, {_pct(high)}]"


def results_table(results: list[ArchResult]) -> Table:
    header = [
        "model", "family", "encoder", "params (M)", "mIoU % [95% CI]", "native mIoU % [95% CI]",
        "damage mIoU %", "Dice %", "pixel acc. %", "img/s", "ms/img", "train s",
    ]  # fmt: skip
    rows = []
    for r in results:
        prepared = r.metrics.get("prepared") or r.metrics["native"]
        native = r.metrics.get("native")
        rows.append([
            r.arch, family(r.encoder), r.encoder, f"{prepared['params_m']:.1f}", _ci(prepared),
            _ci(native) if native and "prepared" in r.metrics else "-",
            _pct(prepared["miou_damage"]), _pct(prepared["dice"]),
            _pct(prepared["pixel_accuracy"]), f"{prepared['throughput_img_s']:.1f}",
            f"{prepared['latency_ms']:.1f}", f"{r.training['train_seconds']:.0f}",
        ])  # fmt: skip
    return Table(header, [*rows, _no_model_row(results[0], len(header))])


def _no_model_row(result: ArchResult, width: int) -> list[str]:
    """The floor: every scored pixel labelled with the commonest class, no model at all."""
    floors = {
        k: _pct(majority_baseline_miou(d["confusion_matrix"])) for k, d in result.metrics.items()
    }
    prepared = floors.get("prepared") or floors["native"]
    native = floors["native"] if "native" in floors and "prepared" in floors else "-"
    row = ["no model", "-", "commonest class everywhere", "0", prepared, native]
    return row + ["-"] * (width - len(row))


def comparison_table(pairs: list[dict]) -> Table:
    header = ["comparison", "Δ mIoU (points)", "95% CI", "p", "verdict"]
    rows = []
    for p in pairs:
        low, high = p["ci95"]
        rows.append([
            f"{p['a']} − {p['b']}", f"{100 * p['difference']:+.2f}",
            f"[{100 * low:+.2f}, {100 * high:+.2f}]", f"{p['p_value']:.3f}", verdict(p),
        ])  # fmt: skip
    return Table(header, rows)


def verdict(pair: dict) -> str:
    """ "A better" when the interval of mIoU(a) - mIoU(b) excludes 0, else "within noise"."""
    low, high = pair["ci95"]
    if not (low > 0 or high < 0):
        return "within noise"
    return f"{pair['a'] if pair['difference'] > 0 else pair['b']} better"


def _class_iou(document: dict, name: str) -> str:
    entry = document["per_class"][name]
    return _pct(entry["iou"]) if entry["present"] else "absent"


def per_class_table(results: list[ArchResult], resolution: str) -> Table:
    scored = [r for r in results if resolution in r.metrics]
    header = ["class", "test pixels", *(f"{r.arch} IoU %" for r in scored)]
    rows = [
        [
            name,
            f"{scored[0].metrics[resolution]['per_class'][name]['support']:,}",
            *(_class_iou(r.metrics[resolution], name) for r in scored),
        ]
        for name in CLASS_NAMES
    ]
    return Table(header, rows)


def native_change_table(results: list[ArchResult]) -> Table | None:
    """Per class and architecture: IoU at the prepared size, at native size, and the change."""
    both = [r for r in results if {"prepared", "native"} <= set(r.metrics)]
    if not both:
        return None
    header = ["class"] + [f"{r.arch} {k}" for r in both for k in ("prepared", "native", "Δ")]
    rows = []
    for name in CLASS_NAMES:
        row = [name]
        for r in both:
            prepared, native = (r.metrics[k]["per_class"][name] for k in ("prepared", "native"))
            delta = "-"
            if prepared["present"] and native["present"]:
                delta = f"{100 * (native['iou'] - prepared['iou']):+.2f}"
            row += [_class_iou(r.metrics["prepared"], name), _class_iou(r.metrics["native"], name),
                    delta]  # fmt: skip
        rows.append(row)
    return Table(header, rows)


def build_sections(
    results: list[ArchResult], comparisons: dict[str, list[dict]], figures: dict[str, Path]
) -> list[Section]:  # fmt: skip
    split = results[0].metrics[next(iter(results[0].metrics))]["split"]
    sections = [
        Section(
            "Results",
            f"Scores on the {split} split, at the prepared (cached) size and at native "
            "resolution (sliding window over the full-size image). Intervals: 95 % bootstrap "
            "over test images. img/s and ms/img: prepared-size inference at the evaluation "
            "batch size; train s: wall time of training. The last row is the floor a model "
            "must clear: no model, every scored pixel labelled with the commonest class.",
            [results_table(results)],
        )
    ]
    for resolution, pairs in comparisons.items():
        sections.append(
            Section(
                f"Pairwise differences ({resolution} resolution)",
                "Paired bootstrap over the same test images: a difference whose interval "
                "excludes 0 is more than the luck of which artworks landed in the test split.",
                [comparison_table(pairs)],
            )
        )
    for resolution in RESOLUTION_FILES:
        if any(resolution in r.metrics for r in results):
            sections.append(
                Section(
                    f"IoU per class ({resolution} resolution)",
                    "'absent': no pixel of the class in truth or prediction (left out of "
                    "every mean).",
                    [per_class_table(results, resolution)],
                    [(f"IoU per class, {resolution}", figures[f"per_class_iou_{resolution}.png"])],
                )
            )
    change = native_change_table(results)
    if change:
        sections.append(
            Section(
                "What native resolution changes",
                "IoU per class at the prepared size vs at native resolution; thin damage "
                "(hair, scratches, cracks, dust) is what resizing loses.",
                [change],
            )
        )
    if "training_curves.png" in figures:
        sections.append(
            Section("Training", figures=[("Training curves", figures["training_curves.png"])])
        )
    for r in results:
        captions = {
            "samples.png": "Test samples: input | ground truth | prediction | error map",
            "confusion.png": "Confusion matrix (row-normalised), prepared resolution",
            "confusion_native.png": "Confusion matrix (row-normalised), native resolution",
            "per_class_iou.png": "IoU per class",
            "class_distribution.png": "Class distribution: ground truth vs prediction",
        }
        plots = [(captions.get(name, name), path) for name, path in r.plots.items()]
        sections.append(Section(f"{r.arch} ({family(r.encoder)}, {r.encoder})", figures=plots))
    return sections


def _mean_std(mean: float, std: float) -> str:
    return "-" if mean != mean else f"{100 * mean:.2f} ± {100 * std:.2f}"  # NaN: never present


def study_sections(summary: dict, fold_figure: Path | None) -> list[Section]:
    """The study's part of the report: spread over seeds (and folds), the comparisons with
    their two-stage intervals beside the single-seed verdicts, IoU per class."""
    archs = summary["archs"]
    if not archs:
        return [Section("Study", "No study run has a result yet.")]
    folds = sorted({fold for a in archs.values() for fold in a["per_fold"]})
    by_fold = summary["folds"] != "none"
    header = ["model", "runs", "seeds", "test mIoU % (mean ± std)", "damage mIoU %"]
    header += [f"held-out {f}" for f in folds] + ["std over folds"] if by_fold else []
    rows = []
    for arch, a in archs.items():
        row = [arch, str(a["runs"]), ", ".join(map(str, a["seeds"])),
               _mean_std(a["miou_mean"], a["miou_std"]), _pct(a["miou_damage_mean"])]  # fmt: skip
        if by_fold:
            row += [_mean_std(**a["per_fold"][f]) if f in a["per_fold"] else "-" for f in folds]
            row.append(_pct(a["over_folds_std"]))
        rows.append(row)
    where = (
        f"leave one {summary['folds']} out, every value in turn" if by_fold else "the test split"
    )
    sections = [Section(
        "Study: spread over training runs",
        f"Each architecture trained once per seed ({', '.join(map(str, summary['seeds']))}) "
        f"and tested on {where}; mean ± sample std over the runs.",
        [Table(header, rows)],
        [("Test mIoU per held-out fold", fold_figure)] if fold_figure else [],
    )]  # fmt: skip
    if summary["comparisons"]:
        table = comparison_table(summary["comparisons"])
        table.header += ["single-seed benchmark", "the single-seed verdict"]
        for row, pair in zip(table.rows, summary["comparisons"], strict=True):
            single = pair.get("single_seed")
            row += [single or "-", "-" if single is None else
                    ("survives" if single == pair["verdict"] else "does not survive")]  # fmt: skip
        sections.append(Section(
            "Study: pairwise differences over seeds and images",
            "Two-stage bootstrap: each draw resamples the test images (the same for both "
            "models) and, for each model on its own, its training runs; the difference is of "
            "the mean mIoU over runs, averaged over folds. It includes the run-to-run spread "
            "that the benchmark's paired bootstrap over images alone leaves out.",
            [table],
        ))  # fmt: skip
    names = list(next(iter(archs.values()))["per_class_iou"])
    class_rows = [[name] + [_mean_std(**a["per_class_iou"][name]) for a in archs.values()]
                  for name in names]  # fmt: skip
    sections.append(Section(
        "Study: IoU per class % (mean ± std over runs)",
        "'-': the class was never present in truth or prediction of any run.",
        [Table(["class", *archs], class_rows)],
    ))  # fmt: skip
    if summary.get("failures"):
        failed = ", ".join(f"{f['arch']} seed {f['seed']} fold {f['fold']}"
                           for f in summary["failures"])  # fmt: skip
        sections.append(Section("Study: failed runs", f"Left out of the figures above: {failed}."))
    return sections


def comparison_figures(results: list[ArchResult]) -> dict[str, bytes]:
    out = {}
    for resolution in RESOLUTION_FILES:
        series = {
            r.arch: {
                name: (entry["iou"] if entry["present"] else None)
                for name, entry in r.metrics[resolution]["per_class"].items()
            }
            for r in results
            if resolution in r.metrics
        }
        if series:
            out[f"per_class_iou_{resolution}.png"] = pictures.per_class_bars(
                series, f"IoU per class, {resolution} resolution", "IoU (%)"
            )
    histories = {r.arch: r.history for r in results if r.history}
    if histories:
        out["training_curves.png"] = pictures.training_curves(histories, "Training")
    return out


def render_markdown(
    sections: list[Section], root: Path, title: str = "heritageseg benchmark"
) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        for table in section.tables:
            lines.append("| " + " | ".join(table.header) + " |")
            lines.append("|" + "---|" * len(table.header))
            lines += ["| " + " | ".join(row) + " |" for row in table.rows]
            lines.append("")
        for caption, path in section.figures:
            lines += [f"![{caption}]({path.relative_to(root).as_posix()})", ""]
    return "\n".join(lines)


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}
figcaption{color:#555;font-size:14px}
"""


def render_html(sections: list[Section]) -> str:
    """One file with every picture inlined as a data URI: it opens anywhere, offline."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>heritageseg benchmark</title>",
        f"<style>{STYLE}</style></head><body><h1>heritageseg benchmark</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for table in section.tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in table.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        for caption, path in section.figures:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def _study_files(study: Path | None) -> tuple[dict | None, Path | None]:
    """The study's summary and per-fold figure, where `heritageseg study` wrote them."""
    if study is None or not (study / STUDY_SUMMARY).is_file():
        return None, None
    figure = study / "figures" / STUDY_FOLD_PLOT
    summary = read_json(study / STUDY_SUMMARY, rebuild_hint("study"), ("archs", "comparisons"))
    return summary, figure if figure.is_file() else None


def run_report(
    archs: list[str], *, metrics: Path, models: Path, out: Path, iterations: int, seed: int,
    study: Path | None = None,
) -> list[ArchResult]:  # fmt: skip
    """Write benchmark.md, index.html, comparisons.json and figures/ into `out` (other files
    there, such as the inference benchmark's, are left alone); with the study's sections
    when `study` holds a summary (`heritageseg study`)."""
    results = [r for r in (load_result(a, metrics, models) for a in archs) if r]
    if not results:
        raise HeritagesegError(
            f"no evaluated architecture under {metrics}: run `heritageseg evaluate` first"
        )
    comparisons = compare(results, iterations, seed)
    pngs = comparison_figures(results)
    with atomic_dir(out / FIGURES) as staging:
        for name, png in pngs.items():
            (staging / name).write_bytes(png)
        for r in results:
            for name, source in r.plots.items():
                (staging / f"{r.arch}_{name}").write_bytes(source.read_bytes())
        study_summary, study_figure = _study_files(study)
        if study_figure:
            (staging / f"study_{study_figure.name}").write_bytes(study_figure.read_bytes())
    figures = out / FIGURES
    for r in results:
        r.plots = {name: figures / f"{r.arch}_{name}" for name in r.plots}
    sections = build_sections(results, comparisons, {name: figures / name for name in pngs})
    if study_summary:
        figure = figures / f"study_{study_figure.name}" if study_figure else None
        sections += study_sections(study_summary, figure)
    atomic_write_text(out / BENCHMARK_MD, render_markdown(sections, out))
    atomic_write_text(out / INDEX_HTML, render_html(sections))
    write_json(out / COMPARISONS, comparisons)
    return results
