"""The report stage on two really trained and evaluated tiny architectures."""

from __future__ import annotations

import dataclasses
import json
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from heritageseg.core.config import load_params
from heritageseg.core.errors import HeritagesegError
from heritageseg.core.fileio import process_umask
from heritageseg.nn.metrics import majority_baseline_miou, paired_bootstrap
from heritageseg.stages.evaluate import run_evaluation, write_evaluation
from heritageseg.stages.report import run_report
from heritageseg.stages.train import run_training
from tests.browser import distinct_colours, ink, screenshot

from .conftest import ARTIFACTS

ARCHS = ["convnext", "segformer"]


@pytest.fixture(scope="module")
def evaluated(tiny_project: Path, tmp_path_factory) -> Path:
    """models/ and metrics/ of two architectures, trained 2 epochs and evaluated."""
    root = tmp_path_factory.mktemp("evaluated")
    params = load_params(tiny_project / "params.yaml")
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=2))
    params = dataclasses.replace(
        params, evaluate=dataclasses.replace(params.evaluate, bootstrap=200)
    )
    data = tiny_project / "data"
    for arch in ARCHS:
        run_training(
            params, arch, data / "cache", data / "class_weights.json", root / "models" / arch,
            progress=False,
        )  # fmt: skip
        evaluation = run_evaluation(
            params, arch, cache=data / "cache", raw=data / "raw", splits=data / "splits",
            model_dir=root / "models" / arch, split="test",
        )  # fmt: skip
        write_evaluation(evaluation, root / "metrics" / arch)
    return root


@pytest.fixture(scope="module")
def report(evaluated: Path) -> Path:
    out = evaluated / "reports"
    run_report(
        [*ARCHS, "maxvit"], metrics=evaluated / "metrics", models=evaluated / "models",
        out=out, iterations=200, seed=0,
    )  # fmt: skip
    return out


def test_markdown_has_the_results_table_comparisons_and_per_class_tables(evaluated, report):
    text = (report / "benchmark.md").read_text()
    for arch in ARCHS:
        document = json.loads((evaluated / "metrics" / arch / "metrics.json").read_text())
        low, high = document["miou_ci95"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {arch} |"))
        assert f"{100 * document['miou']:.2f} [{100 * low:.2f}, {100 * high:.2f}]" in row
        assert "maxvit" not in row  # not evaluated: left out, not invented
    floor = next(line for line in text.splitlines() if line.startswith("| no model |"))
    matrix = json.loads((evaluated / "metrics" / "convnext" / "metrics.json").read_text())
    assert f"| {100 * majority_baseline_miou(matrix['confusion_matrix']):.2f} |" in floor
    assert "## Pairwise differences (prepared resolution)" in text
    assert "## Pairwise differences (native resolution)" in text
    assert "| convnext − segformer |" in text
    assert "## What native resolution changes" in text
    per_class = text.split("## IoU per class (prepared resolution)")[1].split("##")[0]
    assert len([line for line in per_class.splitlines() if line.startswith("| ")]) == 1 + 16
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (report / link).is_file(), link


def test_comparisons_are_the_paired_bootstrap_of_the_saved_matrices(evaluated, report):
    comparisons = json.loads((report / "comparisons.json").read_text())
    saved = [np.load(evaluated / "metrics" / arch / "per_image.npz") for arch in ARCHS]
    for resolution in ("prepared", "native"):
        assert list(saved[0][f"{resolution}_ids"]) == list(saved[1][f"{resolution}_ids"])
        expected = paired_bootstrap(saved[0][resolution], saved[1][resolution], 200, 0)
        (pair,) = comparisons[resolution]
        assert (pair["a"], pair["b"]) == ("convnext", "segformer")
        assert pair["difference"] == pytest.approx(expected["difference"])
        assert pair["ci95"] == pytest.approx(expected["ci95"])


def test_models_metrics_and_reports_are_readable_by_the_team(evaluated, report):
    """Trained for real, evaluated, reported: under a umask that lets others read (022 on
    most systems), every file is readable and every folder listable by group and others."""
    if process_umask() & 0o055:
        pytest.skip(f"umask {process_umask():03o} hides files from others by choice")
    hidden = [
        f"{path.relative_to(evaluated)} {stat.filemode(path.stat().st_mode)}"
        for folder in ("models", "metrics", "reports")
        for path in (evaluated / folder).rglob("*")
        if (path.stat().st_mode & 0o044) != 0o044
        or (path.is_dir() and (path.stat().st_mode & 0o011) != 0o011)
    ]
    assert not hidden
    assert (report / "index.html").is_file() and (evaluated / "models" / "convnext").is_dir()


def test_html_is_self_contained(report):
    page = (report / "index.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) >= 2 * 5 + 3  # 5 pictures per arch + comparisons + curves
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow
@pytest.mark.browser
def test_report_renders_in_headless_chromium(report):
    shot = screenshot(
        (report / "index.html").as_uri(), ARTIFACTS / "report.png", 1400, 3000, wait_ms=2000
    )
    assert ink(shot) > 0.05, "the rendered report is (nearly) blank"
    assert distinct_colours(shot) > 100, "no tables or pictures rendered"


def test_report_without_any_evaluation_says_what_to_run(tmp_path):
    with pytest.raises(HeritagesegError, match="run `heritageseg evaluate` first"):
        run_report(ARCHS, metrics=tmp_path, models=tmp_path, out=tmp_path / "r",
                   iterations=10, seed=0)  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_missing_per_image_matrices_name_the_file(evaluated, tmp_path):
    metrics = tmp_path / "metrics"
    (metrics / "segformer").mkdir(parents=True)
    source = evaluated / "metrics" / "segformer" / "metrics.json"
    (metrics / "segformer" / "metrics.json").write_bytes(source.read_bytes())
    with pytest.raises(HeritagesegError, match=re.escape("per_image.npz: not found")):
        run_report(ARCHS, metrics=metrics, models=evaluated / "models", out=tmp_path / "r",
                   iterations=10, seed=0)  # fmt: skip


def test_the_report_adds_the_studys_sections_when_given_its_folder(
    evaluated, local_study, tmp_path
):
    run_report(ARCHS, metrics=evaluated / "metrics", models=evaluated / "models",
               out=tmp_path / "r", iterations=50, seed=0,
               study=local_study.folder / "metrics" / "study")  # fmt: skip
    text = (tmp_path / "r" / "benchmark.md").read_text()
    assert text.index("## Results") < text.index("## Study: spread over training runs")
    assert "| segformer | 2 | 0, 1 |" in text and "## Study: IoU per class" in text
    assert "Study: spread over training runs" in (tmp_path / "r" / "index.html").read_text()
