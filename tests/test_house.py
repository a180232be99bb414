"""The house rules as tests: one source of truth for defaults, paths and the model loader,
and the layering that import-linter enforces (it must fail on a broken rule, too)."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
import yaml

from heritageseg import cli
from heritageseg.core import paths
from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.config import ARCHS, IngestConfig, ModelConfig, Params, load_params
from heritageseg.core.errors import ConfigError
from heritageseg.nn.checkpoint import load_trained, save_weights
from heritageseg.nn.models import build_model
from heritageseg.ops.profiles import apply_profile

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# ------------------------------------------------------------------ defaults and params


def test_the_dataclass_defaults_are_the_laptop_params_yaml(tmp_path: Path):
    laptop = Path(shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml"))
    apply_profile("laptop", laptop)  # whatever profile params.yaml is switched to now
    assert load_params(laptop) == Params()


PARAMS_COMMANDS = [
    ["validate"], ["ingest"], ["split"], ["prepare"], ["weights"], ["train", "--arch", "convnext"],
    ["evaluate", "--arch", "convnext"], ["loco", "--arch", "convnext"], ["report"],
    ["promote", "--arch", "segformer"], ["predict", "x.png", "--out", "out"], ["ui"],
    ["profile", "paper"], ["bench", "ingest"], ["bench", "data"],
    ["bench", "train", "--arch", "convnext"], ["bench", "infer"],
]  # fmt: skip


@pytest.mark.parametrize("argv", PARAMS_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_that_reads_params_stops_on_a_missing_file(tmp_path, capsys, argv):
    missing = tmp_path / "param.yaml"
    assert cli.main(["--params", str(missing), *argv]) == 2
    assert f"{missing}: params file not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was started or written


# ------------------------------------------------------------------ dvc.yaml and core.paths


def _stages() -> dict[str, dict]:
    """dvc.yaml's stages with every `foreach` expanded, as DVC names them (train@convnext)."""
    stages = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        assert stage["foreach"] == list(ARCHS), f"{name}: foreach is not core.config.ARCHS"
        for arch in stage["foreach"]:
            text = yaml.safe_dump(stage["do"]).replace("${item}", arch)
            stages[f"{name}@{arch}"] = yaml.safe_load(text)
    return stages


def _path_defaults() -> set[str]:
    return {str(v) for v in vars(paths).values() if isinstance(v, Path)}


def _subparser(argv: list[str]):
    """The argparse parser of the (sub)command that `argv` names."""
    parser = cli._build_parser()
    for word in argv:
        actions = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return parser


@pytest.mark.parametrize("name", sorted(_stages()))
def test_each_stage_command_passes_exactly_the_cli_default_paths(name: str):
    argv = shlex.split(_stages()[name]["cmd"])[1:]
    parsed = vars(cli._build_parser().parse_args(argv))
    for action in _subparser(argv)._actions:
        if isinstance(action.default, str) and action.default in _path_defaults():
            assert any(flag in argv for flag in action.option_strings), (name, action.dest)
            assert parsed[action.dest] == action.default, (name, action.dest)


def _known_outputs() -> set[str]:
    """Every data path the pipeline may name in dvc.yaml, composed from core.paths."""
    first = (paths.PARAMS_CHECKED, paths.RAW, paths.SPLITS, paths.CACHE, paths.CLASS_WEIGHTS)
    known = {str(p) for p in first}
    for arch in ARCHS:
        model, metrics = paths.MODELS / arch, paths.METRICS / arch
        known |= {str(model), str(metrics)}
        known |= {str(model / f) for f in (paths.WEIGHTS, paths.CONFIG, paths.HISTORY)}
        files = (paths.PER_IMAGE, paths.PER_CLASS, paths.PLOTS, *paths.RESOLUTION_FILES.values())
        known |= {str(metrics / f) for f in files}
    reports = (paths.BENCHMARK_MD, paths.INDEX_HTML, paths.COMPARISONS, paths.FIGURES)
    return known | {str(paths.REPORTS / f) for f in reports}


def _declared(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_every_data_path_in_dvc_yaml_comes_from_core_paths_and_every_code_dep_exists():
    known = _known_outputs()
    for name, stage in _stages().items():
        for kind in ("deps", "outs", "metrics", "plots"):
            for path in _declared(stage.get(kind, [])):
                if path.startswith("src/"):
                    assert (ROOT / path).exists(), f"{name}: {kind} {path} does not exist"
                else:
                    assert path in known, f"{name}: {kind} {path} is not named in core.paths"
    train = _stages()["train@convnext"]
    assert str(paths.RAW) in train["deps"], "train reads data/raw/manifest.json"


def test_every_stage_runs_after_validate_so_a_params_mistake_costs_no_output():
    stages = _stages()
    producer = {out: name for name, st in stages.items() for out in _declared(st.get("outs", []))}

    def upstream(name: str) -> set[str]:
        found = set()
        for dep in _declared(stages[name].get("deps", [])):
            owner = next((producer[out] for out in producer if dep.startswith(out)), None)
            if owner is not None:
                found |= {owner} | upstream(owner)
        return found

    assert stages["validate"]["params"] == [{str(paths.PARAMS): None}]  # every key
    assert all("validate" in upstream(name) for name in stages if name != "validate")


# ------------------------------------------------------------------ layering


def _lint_copy(tmp_path: Path, change: tuple[str, str] | None) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package, with one line appended to one module."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    if change:
        module, line = change
        with (tmp_path / "src" / "heritageseg" / module).open("a") as handle:
            handle.write(f"\n{line}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "broken"),
    [
        (None, None),
        (("nn/models.py", "import heritageseg.ops.tracking"), "nn and data import no MLflow"),
        (("data/cache.py", "import mlflow"), "nn and data import no MLflow"),
        (("core/paths.py", "import heritageseg.nn.models"), "Layers:"),
        (("stages/results.py", "import heritageseg.stages.report"), "No import cycles"),
    ],
    ids=["as committed", "nn imports ops", "data imports mlflow", "core imports nn", "cycle"],
)
def test_lint_imports_keeps_the_layers_and_fails_on_a_broken_rule(tmp_path, change, broken):
    result = _lint_copy(tmp_path, change)
    if broken is None:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode != 0
        assert any(broken in line and "BROKEN" in line for line in result.stdout.splitlines())


# ------------------------------------------------------------------ the one model loader


@pytest.fixture
def hub_unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub and an empty cache (huggingface_hub reads HF_HUB_OFFLINE at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_a_model_trained_from_imagenet_weights_evaluates_predicts_and_benchmarks_offline(
    tmp_path: Path, hub_unreachable, capsys
):
    from heritageseg.bench.data import prepare_bench_cache
    from heritageseg.bench.infer import bench_model
    from heritageseg.infer.serving import Segmenter

    size = 32
    imagenet = ModelConfig(encoder="tu-convnext_atto", encoder_weights="imagenet", image_size=size)
    with pytest.raises(ConfigError, match="could not load the ImageNet weights"):
        build_model(imagenet)  # the hub really is out of reach
    torch.manual_seed(0)
    network = build_model(dataclasses.replace(imagenet, encoder_weights=None))
    config = {
        "arch": "convnext", "model": dataclasses.asdict(imagenet), "classes": list(CLASS_NAMES),
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
    }  # fmt: skip
    models = tmp_path / "models"
    save_weights(network, models / "convnext", config)

    trained = load_trained(models / "convnext")
    assert trained.model == imagenet  # typed, as trained; never a raw dict
    assert torch.equal(trained.network.state_dict()["segmentation_head.0.weight"],
                       network.state_dict()["segmentation_head.0.weight"])  # fmt: skip

    raw, cache = prepare_bench_cache(IngestConfig(n=12, min_size=48, max_size=64), tmp_path, size)
    params = tmp_path / "params.yaml"
    params.write_text(
        "tracking:\n  enabled: false\nevaluate:\n  resolution: prepared\n  bootstrap: 10\n"
        f"train:\n  convnext:\n    encoder_weights: imagenet\n    image_size: {size}\n"
    )
    argv = ["--params", str(params), "evaluate", "--arch", "convnext", "--cache", str(cache)]
    argv += ["--raw", str(raw), "--models", str(models), "--out", str(tmp_path / "metrics")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "metrics" / "convnext" / paths.METRICS_FILE).is_file()

    folder = models / "convnext"
    segmenter = Segmenter(folder / paths.WEIGHTS, folder / paths.CONFIG, backend="eager")
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert segmenter.labels(image).shape == (50, 70)

    bench = bench_model(load_params(params), "convnext", size, models)
    assert bench.trained and bench.encoder == imagenet.encoder
