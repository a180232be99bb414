"""`heritageseg study`: the plan's checks, the study section, and the tiny study run here
(2 archs x 2 seeds): failures contained, reruns that run only what is missing, MLflow."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from heritageseg.core.config import load_params
from heritageseg.core.errors import ConfigError, DataError
from heritageseg.stages.report import render_markdown, study_sections
from heritageseg.stages.study import StudyRun, plan_study

from .conftest import STUDY, run_study_command, study_params


def _with_study(folder, study: dict):
    path = study_params(folder)
    params = yaml.safe_load(path.read_text())
    params["study"].update(study)
    path.write_text(yaml.safe_dump(params))
    return load_params(path)


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"folds": "decade"}, "study.folds='decade': choose one of none, content, material"),
        ({"seeds": []}, "study.seeds=[]: need at least one"),
        ({"archs": ["unet"]}, "study.archs=['unet']: unknown 'unet'"),
        ({"seeds": [1, 1]}, "study.seeds=[1, 1]: each value at most once"),
    ],
)
def test_a_bad_study_section_is_an_error_naming_the_key(tmp_path, study, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _with_study(tmp_path, study)


def test_a_fold_with_nothing_to_hold_out_is_an_error_before_anything_runs(tiny):
    params = _with_study(tiny, {"folds": "content"})
    cache, splits = tiny / "data" / "cache", tiny / "data" / "splits"
    runs = plan_study(params, cache, splits)
    folds = sorted({run.fold for run in runs})
    assert len(runs) == len(STUDY["archs"]) * len(STUDY["seeds"]) * len(folds) > 4
    table = splits / "lo_content.csv"
    table.write_text(table.read_text() + "ghost-record,Tapestry\n")  # no cached record
    with pytest.raises(DataError, match=r"holding out 'Tapestry' .*leaves no test record"):
        plan_study(params, cache, splits)


def test_runs_are_named_by_arch_seed_and_fold():
    assert StudyRun("maxvit", 2).name == "maxvit-seed2"
    assert StudyRun("convnext", 0, "Line art").name == "convnext-seed0-line-art"


def test_the_study_section_shows_spread_verdicts_and_whether_the_single_seed_one_survives():
    per_class = {"Clean": {"mean": 0.9, "std": 0.01}, "Hair": {"mean": float("nan"),
                                                             "std": float("nan")}}  # fmt: skip
    arch = {"runs": 2, "seeds": [0, 1], "miou_mean": 0.1, "miou_std": 0.02,
            "miou_damage_mean": 0.05, "per_fold": {"all": {"mean": 0.1, "std": 0.02}},
            "over_folds_std": 0.0, "per_class_iou": per_class}  # fmt: skip
    pair = {"a": "maxvit", "b": "convnext", "difference": 0.012, "ci95": [-0.01, 0.03],
            "p_value": 0.3, "verdict": "within noise", "single_seed": "maxvit better"}  # fmt: skip
    summary = {"folds": "none", "seeds": [0, 1], "archs": {"maxvit": arch, "convnext": arch},
               "comparisons": [pair], "failures": []}  # fmt: skip
    text = render_markdown(study_sections(summary, None), ".", "study")
    assert "| maxvit | 2 | 0, 1 | 10.00 ± 2.00 | 5.00 |" in text
    assert "| maxvit − convnext | +1.20 | [-1.00, +3.00] | 0.300 | within noise | maxvit better " \
           "| does not survive |" in text  # fmt: skip
    assert "| Hair | - | - |" in text


def test_the_study_contains_failures_and_its_rerun_runs_only_them(local_study):
    broken, fixed = local_study.broken, local_study.fixed
    assert broken.returncode == 2, broken.stderr[-3000:]  # an error, not a traceback
    assert "study: 4 run(s), 0 with a current result, 4 to run (local)" in broken.stdout
    assert "2 of the study's runs failed" in broken.stderr
    assert "- convnext seed 0 fold all: log (here)" in broken.stderr
    assert "Traceback (most recent call last)" in broken.stderr and "attto" in broken.stderr
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "study: 4 run(s), 2 with a current result, 2 to run (local)" in fixed.stdout
    study = local_study.folder / "metrics" / "study"
    summary = json.loads((study / "summary.json").read_text())
    assert {arch: a["runs"] for arch, a in summary["archs"].items()} == {"segformer": 2,
                                                                        "convnext": 2}  # fmt: skip
    (pair,) = summary["comparisons"]
    assert pair["runs"] == [2, 2] and pair["verdict"] in ("within noise", "segformer better",
                                                          "convnext better")  # fmt: skip
    assert json.loads((study / "failures.json").read_text()) == []
    assert (
        "## Study: pairwise differences over seeds and images" in (study / "study.md").read_text()
    )
    assert sorted(p.name for p in (study / "runs").iterdir()) == [
        "convnext-seed0.json", "convnext-seed1.json", "segformer-seed0.json", "segformer-seed1.json"
    ]  # fmt: skip


def test_a_rerun_after_deleting_one_result_runs_that_one_only(local_study, tmp_path):
    folder = tmp_path / "project"
    shutil.copytree(local_study.folder, folder, symlinks=True)
    runs = folder / "metrics" / "study" / "runs"
    before = json.loads((runs / "segformer-seed1.json").read_text())
    (runs / "segformer-seed1.json").unlink()
    again = run_study_command(folder)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "study: 4 run(s), 3 with a current result, 1 to run (local)" in again.stdout
    after = json.loads((runs / "segformer-seed1.json").read_text())
    assert after["per_image"] == before["per_image"] and after["miou"] == before["miou"]


def test_the_study_is_one_mlflow_parent_with_a_child_per_run(local_study):
    from mlflow.tracking import MlflowClient

    assert "logged the study to MLflow run" in local_study.fixed.stdout
    parent_id = local_study.fixed.stdout.rsplit("logged the study to MLflow run ", 1)[1].split()[0]
    client = MlflowClient()
    parent = client.get_run(parent_id)
    assert {"segformer_test_miou_mean", "convnext_test_miou_std",
            "segformer_minus_convnext_miou"} <= set(parent.data.metrics)  # fmt: skip
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent_id}'")  # fmt: skip
    finished = {c.info.run_name: c for c in children if c.info.status == "FINISHED"}
    assert sorted(finished) == ["convnext-seed0", "convnext-seed1", "segformer-seed0",
                                "segformer-seed1"]  # fmt: skip
    tags = finished["convnext-seed1"].data.tags
    assert (tags["heritageseg.arch"], tags["heritageseg.seed"], tags["heritageseg.fold"]) == (
        "convnext",
        "1",
        "all",
    )
    assert "test_miou" in finished["convnext-seed1"].data.metrics


def test_a_study_by_fold_writes_the_per_fold_table_and_figure(tmp_path):
    from heritageseg.ops.study import write_study

    per_class = {"Clean": {"mean": 0.9, "std": 0.0}}
    archs = {
        arch: {"runs": 4, "seeds": [0, 1], "miou_mean": m, "miou_std": 0.01,
               "miou_damage_mean": 0.02, "over_folds_std": 0.03, "per_class_iou": per_class,
               "per_fold": {"Line art": {"mean": m, "std": 0.01},
                            "Photograph": {"mean": m + 0.05, "std": 0.02}}}
        for arch, m in (("convnext", 0.1), ("maxvit", 0.2))
    }  # fmt: skip
    write_study(tmp_path, {"folds": "content", "seeds": [0, 1], "archs": archs,
                           "comparisons": [], "failures": []})  # fmt: skip
    figure = tmp_path / "figures" / "folds.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "study.md").read_text()
    assert "| held-out Line art | held-out Photograph | std over folds |" in text
    assert (
        "| maxvit | 4 | 0, 1 | 20.00 ± 1.00 | 2.00 | 20.00 ± 1.00 | 25.00 ± 2.00 | 3.00 |" in text
    )
    assert "![Test mIoU per held-out fold](figures/folds.png)" in text
    assert json.loads((tmp_path / "failures.json").read_text()) == []
