"""The MLflow pyfunc model: images of any size in, label masks out.

Format (the same in Python and over REST, `/invocations`): the input is a DataFrame with a
column `image` of base64-encoded PNG or JPEG files; the output is a DataFrame with `mask`
(base64 PNG, mode L, the input's size, values = class ids 0..15), `height` and `width`.
The model carries its weights (`model.safetensors`), its `config.json` (architecture,
normalisation, tile), the heritageseg code and the graphs exported from those weights at
registration (`model.onnx`, and `model.int8.onnx` where int8 labels as exact onnx does: its
default backend on a CPU). It does its own normalisation and sliding-window prediction, so
it loads and predicts offline in a fresh process; on a CPU, from its graphs, without
importing torch. It is saved as "models from code" (this file's `set_model`), so loading it
unpickles nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from PIL import Image

from heritageseg.core.config import MAX_PIXELS_OPTION, PREDICT_DEFAULTS, PredictConfig
from heritageseg.core.trained import read_trained_config
from heritageseg.data.images import ImageError, read_rgb
from heritageseg.infer.backends import GRAPH_FILES, backend_spec, serving_predictor
from heritageseg.infer.window import RowSource, predict_bands, sliding_window_predict, tile_count

IMAGE_COLUMN = "image"
MAX_PIXELS = PREDICT_DEFAULTS.max_pixels  # for models registered before the limit was logged
SERVING_LIMIT_OPTION = f"{MAX_PIXELS_OPTION}, logged with the model at registration"
OUTPUT_COLUMNS = ("mask", "height", "width")
GRAPH_ARTIFACTS = {backend: f"{backend}_graph" for backend in GRAPH_FILES}  # pyfunc artifacts


def encode_image(image: np.ndarray | Image.Image, fmt: str = "PNG") -> str:
    """An RGB array / PIL image -> base64 text of its PNG (or JPEG) file."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(text: str, max_pixels: int = MAX_PIXELS, row: int = 0) -> np.ndarray:
    """base64 PNG/JPEG -> (H, W, 3) uint8 RGB, read as ingest reads it (16-bit scaled, CMYK,
    palette and alpha converted); an image over `max_pixels` is refused from its header."""
    name = f"column {IMAGE_COLUMN!r}, row {row}"
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: not base64 text of an image file") from None
    return read_rgb(data, max_pixels=max_pixels, name=name, option=SERVING_LIMIT_OPTION)


def decode_mask(text: str) -> np.ndarray:
    """base64 PNG (mode L) -> (H, W) uint8 class ids."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def _encode_mask(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def serving_window(serving: dict) -> PredictConfig:
    """The `predict` settings a model was registered with (its serving.json). A model from
    before the window was logged has only an overlap in pixels: the training size's tile."""
    if "tile" not in serving:
        return PredictConfig(max_pixels=serving.get("max_pixels", MAX_PIXELS), tile=None)
    known = {f.name for f in dataclasses.fields(PredictConfig)}
    return PredictConfig(**{k: v for k, v in serving.items() if k in known})


class Segmenter:
    """A trained model (config.json + model.safetensors) with the graphs exported from it,
    by backend (`GRAPH_FILES`). Nothing heavier than its settings is loaded until a backend
    is chosen, and a backend that runs a graph never builds the network."""

    def __init__(
        self,
        weights: Path,
        config: Path,
        window: PredictConfig = PREDICT_DEFAULTS,
        backend: str | None = None,
        graphs: dict[str, Path] | None = None,
        arch: str = "ARCH",
        fixed_input_size: bool | None = None,
    ):
        self.weights, self.config = Path(weights), Path(config)
        self.trained = read_trained_config(self.config)
        self.graphs = {name: Path(graph) for name, graph in (graphs or {}).items()}
        self.arch, self.fixed_input_size = arch, fixed_input_size
        self.use_window(window)
        self.use_backend(backend)

    def use_window(self, window: PredictConfig) -> None:
        """Tile side, overlap and batch of the sliding window (`predict` in params.yaml); an
        encoder built for one input size keeps its training size."""
        model = self.trained.model
        fixed = window.tile is None or self._fixed_input_size()
        self.tile = model.image_size if fixed else window.tile
        self.overlap = min(round(self.tile * window.overlap), self.tile - 1)
        self.batch_size = window.batch_size

    def _fixed_input_size(self) -> bool:
        if self.fixed_input_size is None:  # registered before serving.json said: ask timm
            from heritageseg.nn.models import fixed_input_size

            self.fixed_input_size = fixed_input_size(self.trained.model.encoder)
        return self.fixed_input_size

    def use_backend(self, backend: str | None) -> None:
        """The inference backend (heritageseg.infer.backends); None: predict's default, int8
        when this model carries its int8 graph, else exact onnx on a CPU."""
        self.backend, self.predict = serving_predictor(
            self.config, self.weights, backend, self.tile, self.graphs, self.arch
        )
        self.in_flight = backend_spec(self.backend).in_flight

    def labels(self, image: np.ndarray) -> np.ndarray:
        """Labels of an image held in memory."""
        return sliding_window_predict(self.predict, image, **self._window())

    def bands(self, rows: RowSource, height: int, width: int, on_tiles=None):
        """(top, labels) bands of an image read a band of rows at a time (`predict_bands`)."""
        return predict_bands(self.predict, rows, height, width, on_tiles=on_tiles, **self._window())

    def tiles(self, height: int, width: int) -> int:
        return tile_count(height, width, self.tile, self.overlap)

    def _window(self) -> dict:
        trained, window = self.trained, {"tile": self.tile, "overlap": self.overlap}
        return {**window, "num_classes": len(trained.classes), "mean": trained.mean,
                "std": trained.std, "batch_size": self.batch_size,
                "in_flight": self.in_flight}  # fmt: skip


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of `Segmenter` (artifacts `weights`, `config`, `serving` and the
    exported graphs, `GRAPH_ARTIFACTS`)."""

    def load_context(self, context) -> None:
        serving = json.loads(Path(context.artifacts["serving"]).read_text())
        window = serving_window(serving)
        artifacts = context.artifacts
        graphs = {b: artifacts[name] for b, name in GRAPH_ARTIFACTS.items() if name in artifacts}
        self.segmenter = Segmenter(
            artifacts["weights"], artifacts["config"], window, graphs=graphs,
            arch=serving.get("arch", "ARCH"), fixed_input_size=serving.get("fixed_input_size"),
        )  # fmt: skip
        if "tile" not in serving:  # registered before the window was: its overlap in pixels
            self.segmenter.overlap = serving["overlap"]
        self.max_pixels = window.max_pixels

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if IMAGE_COLUMN not in model_input:
            raise ValueError(f"input needs a column {IMAGE_COLUMN!r} of base64 images")
        rows = []
        for row, text in enumerate(model_input[IMAGE_COLUMN]):
            try:
                image = decode_image(text, self.max_pixels, row)
            except (ImageError, ValueError) as exc:  # the client's input: HTTP 400, not 500
                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
            mask = self.segmenter.labels(image)
            rows.append((_encode_mask(mask), mask.shape[0], mask.shape[1]))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
