"""Inference backends against eager fp32 on tiny models; ONNX export; `bench infer`."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heritageseg.bench.infer import loggable
from heritageseg.cli import main
from heritageseg.core.classes import CLASS_NAMES
from heritageseg.core.config import Backend, ModelConfig, PredictConfig
from heritageseg.core.paths import CONFIG, ONNX_GRAPH, WEIGHTS
from heritageseg.infer import backends
from heritageseg.infer.backends import (
    BACKENDS,
    CALIBRATED,
    CPU_FALLBACK,
    CUDA_DEFAULT,
    DEFAULT_PREDICT_BACKEND,
    GRAPH_FILES,
    BackendError,
    agreement,
    available_backends,
    build_predictor,
    check_backend,
    current_graph,
    default_backend,
    export_onnx_bytes,
    export_trained_onnx,
    graph_weights_sha256,
    onnx_predictor,
    serving_graphs,
    weights_sha256,
)
from heritageseg.nn.checkpoint import save_weights
from heritageseg.nn.engine import _cpu_has_bf16
from heritageseg.nn.models import build_model

SIZE = 64


def _model(encoder: str = "tu-convnext_atto", head: str = "fine") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(encoder=encoder, image_size=SIZE, head=head)).eval()


def _batch(count: int = 2, size: int = SIZE) -> np.ndarray:
    """A normalised batch as every Predict takes it: a float32 host array."""
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1)).numpy()


def _relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.linalg.norm(reference - other) / np.linalg.norm(reference))


@pytest.mark.parametrize("encoder", ["tu-convnext_atto", "mit_b0"])
def test_onnx_matches_eager_fp32_with_dynamic_batch_and_size(encoder: str):
    model = _model(encoder)
    eager = build_predictor(model, "eager")
    onnx = build_predictor(model, "onnx", example_size=SIZE)
    for batch in (_batch(1), _batch(3, size=96)):  # other batch and side than exported
        reference = eager(batch)
        assert _relative_error(reference, onnx(batch)) < 1e-4
        assert agreement(reference, onnx(batch)) > 0.999


def test_a_batch_split_across_per_core_sessions_keeps_its_order_and_values():
    graph = export_onnx_bytes(_model(), SIZE)
    whole, split = onnx_predictor(graph, workers=1), onnx_predictor(graph, workers=2)
    for count in (1, 2, 5):  # smaller than, equal to and not a multiple of the workers
        batch = _batch(count)
        assert _relative_error(whole(batch), split(batch)) < 1e-5, count


def test_int8_keeps_logits_close_to_eager():
    model = _model()
    batch = _batch(4)
    reference = build_predictor(model, "eager")(batch)
    calibration = torch.from_numpy(batch)
    int8 = build_predictor(model, "int8", example_size=SIZE, calibration=calibration)(batch)
    assert _relative_error(reference, int8) < 0.25
    assert agreement(reference, int8) > 0.8


@pytest.mark.skipif(not _cpu_has_bf16(), reason="bf16 is emulated (slow) on this CPU")
def test_bf16_agrees_with_eager_and_returns_fp32():
    model = _model("mit_b0", head="hierarchical")
    batch = _batch()
    reference = build_predictor(model, "eager")(batch)
    out = build_predictor(model, "bf16")(batch)
    assert out.dtype == np.float32 and out.shape == reference.shape
    assert _relative_error(reference, out) < 0.05
    assert agreement(reference, out) > 0.95


@pytest.mark.slow
def test_compiled_model_agrees_with_eager():
    """A small conv net: inductor takes minutes on a U-Net on 2 busy cores."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.GELU(),
        torch.nn.Conv2d(8, 16, 1),
    ).eval()  # fmt: skip
    batch = _batch()
    reference = build_predictor(model, "eager")(batch)
    out = build_predictor(model, "compile")(batch)
    assert _relative_error(reference, out) < 0.05
    assert agreement(reference, out) > 0.95


@pytest.mark.slow
def test_inductor_int8_agrees_with_eager_for_any_batch_and_refuses_other_sizes():
    """A small conv + linear net (a U-Net compiles for minutes on 2 busy cores); 5 images
    are one batch of 4 and one zero-padded to 4."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 8, 1),
    ).eval()  # fmt: skip
    calibration, batch = _batch(8), _batch(5)
    reference = build_predictor(model, "eager")(batch)
    predict = build_predictor(model, "int8-inductor", calibration=torch.from_numpy(calibration))
    out = predict(batch)
    assert out.shape == reference.shape and out.dtype == np.float32
    assert _relative_error(reference, out) < 0.1
    assert agreement(reference, out) > 0.9
    assert np.array_equal(predict(batch[:1]), out[:1])  # padding changes nothing
    with pytest.raises(BackendError, match="compiled for 64x64 inputs, got 96x96"):
        predict(_batch(1, size=96))


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(BackendError, match="valid: eager, bf16, fp16, compile, onnx, int8"):
        check_backend("tensorrt")
    with pytest.raises(BackendError, match="runs on cuda only, not on cpu; on cpu choose one"):
        build_predictor(_model(), "fp16", "cpu")
    for calibrated in ("int8", "int8-inductor"):
        with pytest.raises(BackendError, match=f"{calibrated} needs calibration images"):
            build_predictor(_model(), calibrated, "cpu")
    assert set(available_backends("cpu")) <= set(BACKENDS)


def test_cuda_selection_logic_with_mocked_cuda_device():
    """No GPU here: only the choice is checked, on a torch.device that is never used."""
    cuda = torch.device("cuda")
    assert default_backend(cuda) == "fp16"
    assert available_backends(cuda) == ["eager", "bf16", "fp16", "compile"]
    with pytest.raises(BackendError, match="'onnx' runs on cpu only, not on cuda"):
        build_predictor(_MockedCudaModel(), "onnx", cuda)


class _MockedCudaModel(torch.nn.Module):
    """Stands in for a model moved to a GPU, which this machine does not have."""

    def to(self, *args, **kwargs):
        return self


def test_export_round_trip_writes_a_graph_that_matches_eager(tmp_path: Path):
    save_weights(_model(), tmp_path / "convnext", _config(SIZE))
    out = tmp_path / "exported" / "model.onnx"
    check = export_trained_onnx(tmp_path / "convnext", out, int8=False, cache=tmp_path)
    assert out.is_file() and check["max_abs_diff"] < 1e-3 and check["agreement"] > 0.999
    assert not list(out.parent.glob("*.tmp*"))


def test_bench_infer_writes_every_row(tmp_path: Path, tiny_cache: Path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  convnext:\n    image_size: 32\n")
    report = tmp_path / "reports" / "inference.md"
    backends = ["eager", "onnx", "int8"]
    argv = ["--params", str(params), "bench", "infer", "--archs", "convnext", "--sizes", "32"]
    argv += ["--backends", *backends, "--images", "2", "--rounds", "2", "--batch-size", "2"]
    argv += ["--cache", str(tiny_cache), "--models", str(tmp_path), "--out", str(report)]
    assert main(argv) == 0
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| convnext |")]
    assert [row.split("|")[5].strip() for row in rows] == backends
    assert "| eager | " in text and "1.0000 | +0.00 |" in text  # eager agrees with itself
    assert "## Best backend within 0.5 mIoU points" in text
    figures = json.loads(report.with_suffix(".json").read_text())
    assert len(loggable(figures)) == 6 * len(backends)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heritageseg.bench.data import prepare_bench_cache
    from heritageseg.core.config import IngestConfig

    folder = tmp_path_factory.mktemp("infer")
    raw_cfg = IngestConfig(n=20, seed=0, min_size=64, max_size=96, workers=1)
    return prepare_bench_cache(raw_cfg, folder, size=32)[1]


def test_evaluation_predictor_without_a_backend_is_eager_at_the_training_precision(
    tmp_path: Path,
):
    from heritageseg.nn.checkpoint import load_trained
    from heritageseg.stages.evaluate import evaluation_predictor

    model = _model()
    save_weights(model, tmp_path, _config(SIZE))
    batch = _batch()
    reference = build_predictor(model, "eager")(batch)
    trained = load_trained(tmp_path)
    assert trained.model.image_size == SIZE
    as_trained = evaluation_predictor(
        trained.network, None, torch.device("cpu"), "fp32", trained, tmp_path
    )
    assert np.array_equal(as_trained(batch), reference)


def _config(size: int) -> dict:
    return {
        "model": {"encoder": "tu-convnext_atto", "image_size": size, "head": "fine"},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "classes": list(CLASS_NAMES),
    }


def test_registration_exports_both_graphs_and_the_model_maps_with_int8_without_torch(
    tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    """Nothing exported beforehand: logging the model exports exact onnx and int8 (calibrated
    on the cache's train images) from its weights. Loaded in a fresh process, it maps with
    int8 by default and never imports torch; eager PyTorch agrees on most pixels."""
    from heritageseg.stages.predict import write_damage_maps

    monkeypatch.setattr(backends, "MIN_INT8_AGREEMENT", 0.0)  # an untrained net's labels tie
    folder = tmp_path / "convnext"
    save_weights(_model(), folder, _config(32))
    uri = _logged(folder, tiny_cache)
    segmenter = _segmenter(uri)
    assert sorted(segmenter.graphs) == ["int8", "onnx"] and segmenter.backend == "int8"
    assert b"QuantizeLinear" in segmenter.graphs["int8"].read_bytes()
    image = _picture(tmp_path / "wall.png", 70, 90)
    code = (
        "import sys; from pathlib import Path; "
        "from heritageseg.stages.predict import write_damage_maps; "
        f"(report,), _ = write_damage_maps([Path({str(image)!r})], {uri!r}, "
        f"Path({str(tmp_path / 'int8')!r})); print(report['backend'], 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )  # the session's store: MLFLOW_TRACKING_URI is in the environment
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["int8", "False"], done.stdout
    (eager,), _ = write_damage_maps([image], uri, tmp_path / "eager", backend="eager")
    assert eager["backend"] == "eager"
    same = _mask(tmp_path / "int8" / "wall.png") == _mask(tmp_path / "eager" / "wall.png")
    assert same.shape == (70, 90) and same.mean() > 0.8


def test_without_calibration_images_the_served_default_is_exact_onnx(tmp_path: Path):
    from heritageseg.stages.predict import write_damage_maps

    folder = tmp_path / "convnext"
    save_weights(_model(), folder, _config(SIZE))
    uri = _logged(folder)
    assert sorted(_segmenter(uri).graphs) == ["onnx"]
    image = _picture(tmp_path / "wall.png", 50, 70)
    (report,), _ = write_damage_maps([image], uri, tmp_path / "maps")
    assert report["backend"] == CPU_FALLBACK == "onnx"
    with pytest.raises(BackendError, match=r"registered without its int8 graph .*choose one of"):
        write_damage_maps([image], uri, tmp_path / "int8", backend="int8")


def test_an_int8_graph_that_labels_unlike_exact_onnx_is_not_served(
    tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    save_weights(_model(), tmp_path / "convnext", _config(32))
    monkeypatch.setattr(backends, "MIN_INT8_AGREEMENT", 1.01)  # no int8 graph can reach it
    with pytest.warns(UserWarning, match=r"labels only .* % of the validation pixels as exact"):
        graphs, checks = serving_graphs(tmp_path / "convnext", tiny_cache, tmp_path)
    assert sorted(graphs) == ["onnx"] and 0.0 <= checks["int8_agreement"] <= 1.0


def test_a_graph_of_other_weights_is_exported_afresh_for_the_served_model(tmp_path: Path):
    """`train` keeps models/ARCH (dvc persist): a graph exported before retraining is stale."""
    model, folder = _model(), tmp_path / "convnext"
    save_weights(model, folder, _config(SIZE))
    export_trained_onnx(folder, folder / ONNX_GRAPH, int8=False, cache=tmp_path)
    assert current_graph(folder, "onnx") == folder / ONNX_GRAPH
    assert serving_graphs(folder, None, tmp_path)[0] == {"onnx": folder / ONNX_GRAPH}
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_weights(model, folder, _config(SIZE))  # retrained
    assert current_graph(folder, "onnx") is None
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert serving_graphs(folder, None, fresh)[0] == {"onnx": fresh / ONNX_GRAPH}
    assert graph_weights_sha256(fresh / ONNX_GRAPH) == weights_sha256(folder)


def test_a_model_the_exporter_cannot_take_is_served_by_pytorch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Registered without graphs (as models were before graphs were carried): the default
    then exports exact onnx from the weights when the model loads."""
    from heritageseg.infer.serving import Segmenter

    folder = tmp_path / "convnext"
    save_weights(_model(), folder, _config(SIZE))

    def unsupported(*args):
        raise RuntimeError("Exporting the operator 'aten::magic' is not supported")

    monkeypatch.setattr(backends, "export_onnx_bytes", unsupported)
    with pytest.warns(UserWarning, match="no onnx graph for the served model .*aten::magic"):
        assert serving_graphs(folder, None, tmp_path) == ({}, {})
    monkeypatch.undo()
    segmenter = Segmenter(folder / WEIGHTS, folder / CONFIG, PredictConfig(tile=32))
    assert segmenter.backend == CPU_FALLBACK
    labels = segmenter.labels(np.zeros((40, 50, 3), np.uint8))
    assert labels.shape == (40, 50) and labels.max() < 16


def _logged(folder: Path, cache: Path | None = None) -> str:
    """`folder` logged as the pyfunc model into a new run of the test's sqlite store."""
    import mlflow

    from heritageseg.ops.registry import log_model

    with mlflow.start_run() as run:
        pass
    predict = PredictConfig(tile=32)
    log_model(run.info.run_id, folder.name, folder, predict, register=False, cache=cache)
    return f"runs:/{run.info.run_id}/model"


def _segmenter(uri: str):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri).unwrap_python_model().segmenter


def _picture(path: Path, height: int, width: int) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_the_backend_literal_of_params_names_the_tables_backends():
    """core.config cannot import infer (layering), so it spells the names out once more."""
    assert typing.get_args(Backend) == tuple(BACKENDS)
    named = {DEFAULT_PREDICT_BACKEND, CPU_FALLBACK, CUDA_DEFAULT, *GRAPH_FILES, *CALIBRATED}
    assert named <= set(BACKENDS)


def test_the_evaluate_backend_comments_list_exactly_the_tables_backends():
    root = Path(__file__).resolve().parents[1]
    comments = {}
    for path in [root / "params.yaml", *sorted((root / "profiles").glob("*.yaml"))]:
        section = None
        for line in path.read_text().splitlines():
            if line[:1].isalpha():
                section = line.split(":")[0]
            elif section == "evaluate" and line.strip().startswith("backend:") and "#" in line:
                comments[path.name] = line.split("#", 1)[1]
    assert "params.yaml" in comments
    for name, comment in comments.items():
        options = [option.strip() for option in comment.split("|")]
        assert options[0].startswith("null:") and options[1:] == list(BACKENDS), name


@pytest.mark.parametrize("command", [["evaluate"], ["predict"], ["bench", "infer"]])
def test_every_backend_option_offers_exactly_the_tables_backends(command: list[str], capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert "{" + ",".join(BACKENDS) + "}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["predict", "x.png", "--out", "maps", "--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
