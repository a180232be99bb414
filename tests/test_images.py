"""The one image reader of ingest, `predict` and the served model: every mode read the same
way, sizes refused from the header with a message naming the file and the option, bad files
named."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from heritageseg.core.config import MAX_PIXELS_OPTION, PredictConfig, load_params
from heritageseg.core.errors import HeritagesegError
from heritageseg.data.images import ImageError, ImageTooLarge, image_files, read_rgb, to_rgb
from heritageseg.infer.serving import SegmentationModel, decode_image

from .conftest import ROOT
from .images import header_only_png

LIMIT = PredictConfig().max_pixels


def _read(path: Path, limit: int = LIMIT) -> np.ndarray:
    return read_rgb(path, max_pixels=limit, name=str(path), option=MAX_PIXELS_OPTION)


def test_the_default_limit_is_at_least_a_gigapixel_and_params_yaml_states_it():
    assert LIMIT >= 1_000_000_000
    assert load_params(ROOT / "params.yaml").predict.max_pixels == LIMIT


def test_an_image_over_the_limit_is_refused_from_its_header_naming_file_size_and_option(
    tmp_path,
):
    path = header_only_png(tmp_path / "huge.png", 40_000, 30_000)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLarge) as caught:
        _read(path)
    message = str(caught.value)
    assert str(path) in message and "40000 x 30000 = 1,200,000,000 pixels" in message
    assert "1,000,000,000" in message and "predict.max_pixels in params.yaml" in message
    assert before == Image.MAX_IMAGE_PIXELS  # PIL's own limit is restored, never removed


def test_a_200_megapixel_scan_is_read_not_refused_as_a_decompression_bomb(tmp_path):
    """PIL alone refuses this size (DecompressionBombError over 2 x 89 Mpx)."""
    path = tmp_path / "scan.jpg"
    Image.new("RGB", (14_300, 14_000), (200, 180, 150)).save(path, quality=90)
    image = _read(path)
    assert image.shape == (14_000, 14_300, 3) and image.dtype == np.uint8
    assert abs(int(image[7000, 7000, 0]) - 200) <= 2


def test_16_bit_greyscale_reaches_the_network_as_its_8_bit_version_does(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 60), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    eight, sixteen = _read(tmp_path / "g8.png"), _read(tmp_path / "g16.png")
    assert np.array_equal(sixteen, eight) and np.array_equal(eight[..., 1], grey)
    served = decode_image(base64.b64encode((tmp_path / "g16.png").read_bytes()).decode())
    assert np.array_equal(served, eight)  # the served model reads it the same way
    assert np.array_equal(to_rgb(Image.open(tmp_path / "g16.png")), eight)  # so does ingest


@pytest.mark.parametrize(
    "mode, suffix", [("RGBA", ".png"), ("P", ".png"), ("CMYK", ".jpg"), ("LA", ".png")]
)
def test_every_mode_is_read_as_ingest_reads_it(tmp_path, mode, suffix):
    rgb = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(rgb).convert(mode).save(path)
    image = _read(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image, to_rgb(Image.open(path)))


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty file (0 bytes)"),
        (b"not an image at all", "not an image PIL can read"),
        (None, "does not decode"),  # a PNG cut in half
    ],
)
def test_a_bad_file_gets_a_message_naming_it(tmp_path, content, expected):
    path = tmp_path / "bad.png"
    if content is None:
        noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=re.escape(expected)) as caught:
        _read(path)
    assert str(caught.value).startswith(str(path))


def test_a_missing_file_and_an_empty_folder_are_named(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        _read(tmp_path / "nope.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        image_files([tmp_path / "empty"])


def test_a_folder_gives_its_images_sorted_and_leaves_other_files_out(tmp_path):
    for name in ("b.JPG", "a.png", "notes.txt", "c.tif"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in image_files([tmp_path])] == ["a.png", "b.JPG", "c.tif"]


def test_the_served_model_answers_400_for_an_image_over_its_limit(tmp_path):
    """The pyfunc model's own predict, as the scoring server calls it: the client's mistake
    is an MlflowException with a 400 status, raised before any pixel is decoded."""
    import pandas as pd

    model = SegmentationModel()
    model.max_pixels = 1_000  # as logged at registration; the network is never reached
    text = base64.b64encode(header_only_png(tmp_path / "big.png", 200, 100).read_bytes())
    with pytest.raises(MlflowException) as caught:
        model.predict(None, pd.DataFrame({"image": [text.decode()]}))
    assert caught.value.get_http_status_code() == 400
    assert "200 x 100 = 20,000 pixels is over the limit of 1,000 pixels" in str(caught.value)
    with pytest.raises(MlflowException) as caught:
        model.predict(None, pd.DataFrame({"image": ["%%% not base64"]}))
    assert caught.value.get_http_status_code() == 400


def test_a_served_model_keeps_the_window_and_limit_it_was_registered_with():
    from heritageseg.infer.serving import serving_window

    logged = {"arch": "segformer", "max_pixels": 5_000, "tile": 256, "overlap": 0.25,
              "batch_size": 8}  # fmt: skip
    assert serving_window(logged) == PredictConfig(max_pixels=5_000, tile=256, overlap=0.25,
                                                   batch_size=8)  # fmt: skip
    older = serving_window({"arch": "segformer", "overlap": 32})  # an overlap in pixels
    assert (older.tile, older.max_pixels) == (None, LIMIT)


def test_predict_names_every_missing_image_before_it_loads_the_model(tmp_path):
    from heritageseg.stages.predict import write_damage_maps

    missing = [tmp_path / "a.png", tmp_path / "b.jpg"]
    with pytest.raises(HeritagesegError, match=r"image\(s\) not found: .*a\.png, .*b\.jpg"):
        write_damage_maps(missing, str(tmp_path / "no-model"), tmp_path / "maps")
