"""Augmentation and normalisation pipelines (albumentations) for image + label-mask pairs.

The reference benchmark padded and rotated masks with 0, which is Clean: every border it
created was trained as undamaged artwork. Here every geometric op fills the mask with
Background (255), the ignore label, and resamples it with nearest neighbour, so no label
outside {0..15, 255} can ever appear. Images are filled with 0 (black).

Inputs: ``image`` uint8 (H, W, 3) RGB and ``mask`` uint8 (H, W) labels. Outputs:
``out["image"]`` float32 tensor (3, S, S), normalised; ``out["mask"]`` uint8 tensor (S, S)
(the input dtype, kept small for the worker-to-main-process transfer; the Dataset casts it
to int64 for the loss).

Determinism: albumentations 2 ``Compose`` has its own random state and ignores the global
seeds. ``train_transform(..., seed=s)`` fixes it at construction; a Dataset re-seeds it per
DataLoader worker / epoch with ``transform.set_random_seed(seed)`` (e.g. in
``worker_init_fn`` with ``torch.initial_seed() % 2**32``, which differs per worker and per
epoch). Without that, forked workers would all copy one random state and repeat each
other's augmentations.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # the import otherwise checks PyPI

import json
from pathlib import Path

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from heritageseg.core.classes import BACKGROUND_ID
from heritageseg.core.config import AugmentConfig
from heritageseg.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Triple = tuple[float, float, float]

IMAGE_FILL = 0
MASK_FILL = BACKGROUND_ID  # borders and holes are "not artwork": ignored, never Clean
_GEOMETRY = {
    "border_mode": cv2.BORDER_CONSTANT,
    "fill": IMAGE_FILL,
    "fill_mask": MASK_FILL,
}


def normalization(encoder: str) -> tuple[Triple, Triple]:
    """Mean/std the encoder was pretrained with, found offline.

    ``tu-<name>``: timm's pretrained config (maxvit_* use 0.5/0.5, convnext ImageNet).
    ``mit_b*``: ImageNet, what SegFormer's MiT was trained with (smp keeps it on the hub only).
    Other smp encoders: the smp hub config if it is already in the local Hugging Face cache,
    else ImageNet. Nothing here touches the network: smp's ``get_preprocessing_params``
    would, and retries for 20 s when offline.
    """
    if encoder.startswith("tu-"):
        return _timm_normalization(encoder[3:])
    if encoder.startswith("mit_b"):
        return IMAGENET_MEAN, IMAGENET_STD
    return _smp_normalization(encoder)


def _timm_normalization(name: str) -> tuple[Triple, Triple]:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ConfigError(f"encoder tu-{name}: timm has no model {name!r}")
    return _triple(cfg.mean), _triple(cfg.std)


def _smp_normalization(encoder: str) -> tuple[Triple, Triple]:
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    if encoder not in encoders:
        raise ConfigError(f"unknown encoder {encoder!r}: not an smp encoder nor tu-<timm name>")
    settings = encoders[encoder]["pretrained_settings"].get("imagenet", {})
    if "mean" in settings and "std" in settings:  # older smp kept them in the registry
        return _triple(settings["mean"]), _triple(settings["std"])
    if "repo_id" in settings:
        path = try_to_load_from_cache(
            settings["repo_id"], "config.json", revision=settings.get("revision")
        )
        if isinstance(path, str):  # a cached file; otherwise None or a "known missing" marker
            config = json.loads(Path(path).read_text())
            if "mean" in config and "std" in config:
                return _triple(config["mean"]), _triple(config["std"])
    return IMAGENET_MEAN, IMAGENET_STD


def _triple(values) -> Triple:
    a, b, c = (float(v) for v in values)
    return a, b, c


def train_transform(
    cfg: AugmentConfig,
    image_size: int,
    mean: Triple,
    std: Triple,
    crop: bool = False,
    seed: int | None = None,
) -> A.Compose:
    """The reference's train augmentations, with Background (255) fills.

    ``crop=True`` (native-resolution tiles): a random ``image_size`` square crop, padded first
    when the input is smaller. ``crop=False``: the input is resized (aspect kept, longest side
    = ``image_size``) and padded to a square; both are no-ops when it already has that size.
    ``seed`` fixes the pipeline's own random state (see the module docstring).
    """
    fit = _random_crop(image_size) if crop else _fit_square(image_size)
    augment = [
        A.HorizontalFlip(p=cfg.hflip),
        A.VerticalFlip(p=cfg.vflip),
        A.Rotate(
            limit=cfg.rotate_limit,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=cfg.rotate,
            **_GEOMETRY,
        ),
        A.ColorJitter(
            brightness=cfg.brightness,
            contrast=cfg.contrast,
            saturation=cfg.saturation,
            hue=cfg.hue,
            p=cfg.color_jitter,
        ),
        A.Blur(blur_limit=cfg.blur_limit, p=cfg.blur),
    ]
    return A.Compose([*fit, *augment, *_to_tensor(mean, std)], seed=seed)


def eval_transform(image_size: int | None, mean: Triple, std: Triple) -> A.Compose:
    """Deterministic: resize + pad to an ``image_size`` square when given (a no-op when the
    input already has that size), then normalise. ``None`` keeps the input geometry."""
    fit = [] if image_size is None else _fit_square(image_size)
    return A.Compose([*fit, *_to_tensor(mean, std)])


def _check_size(image_size: int) -> None:
    if image_size < 1:
        raise ConfigError(f"image_size={image_size}: need a positive side")


def _fit_square(size: int) -> list[A.BasicTransform]:
    """Longest side to ``size`` (area filter when shrinking the image, nearest for the mask)
    and centred padding to a square."""
    _check_size(size)
    return [
        A.LongestMaxSize(
            max_size=size,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            area_for_downscale="image",
            p=1.0,
        ),
        A.PadIfNeeded(min_height=size, min_width=size, position="center", p=1.0, **_GEOMETRY),
    ]


def _random_crop(size: int) -> list[A.BasicTransform]:
    """Pad small tiles to ``size`` at a random position, then take a random ``size`` crop."""
    _check_size(size)
    return [
        A.PadIfNeeded(min_height=size, min_width=size, position="random", p=1.0, **_GEOMETRY),
        A.RandomCrop(height=size, width=size, p=1.0),
    ]


def _to_tensor(mean: Triple, std: Triple) -> list[A.BasicTransform]:
    return [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]
