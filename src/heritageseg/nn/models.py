"""The only place names become modules: encoder and decoder names from params.yaml -> nn.Module.

Every architecture is built by the same call, ``DECODERS[decoder](encoder_name=...,
encoder_weights=..., classes=...)``, on segmentation_models_pytorch (smp). Encoders are either
smp's own (``mit_b*``, SegFormer's Mix Transformer) or timm models through smp's universal
wrapper (``tu-<timm name>``).

Heads:
- ``fine``: the smp model as is; ``forward`` returns (B, num_classes, H, W) logits.
- ``hierarchical``: one shared encoder + decoder with three segmentation heads (binary 2,
  coarse 4, fine num_classes, see ``heritageseg.core.classes``); ``forward`` returns a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from segmentation_models_pytorch.base import SegmentationHead, SegmentationModel
from segmentation_models_pytorch.base.initialization import initialize_head
from torch import nn

from heritageseg.core.classes import BINARY_NAMES, COARSE_NAMES, NUM_CLASSES
from heritageseg.core.config import ModelConfig
from heritageseg.core.errors import ConfigError

_CONVNEXT = ("atto", "femto", "pico", "nano", "tiny", "small", "base", "large", "xlarge")
_MAXVIT = (
    "pico_rw_256",  # no pretrained weights in timm: random init only
    "nano_rw_256",
    "tiny_rw_224",
    "tiny_tf_224",
    "tiny_tf_384",
    "tiny_tf_512",
    "small_tf_224",
    "small_tf_384",
    "small_tf_512",
    "base_tf_224",
    "base_tf_384",
    "base_tf_512",
)

ENCODERS: dict[str, str] = {
    **{f"tu-convnext_{size}": "CNN" for size in _CONVNEXT},
    **{f"mit_b{i}": "ViT" for i in range(6)},
    "tu-swin_tiny_patch4_window7_224": "ViT",
    **{f"tu-maxvit_{variant}": "hybrid" for variant in _MAXVIT},
    "tu-coatnet_0_rw_224": "hybrid",
}
"""Every supported encoder name -> family (CNN, ViT or hybrid), as reported in the benchmark."""

DECODERS: dict[str, Callable[..., SegmentationModel]] = {
    "unet": smp.Unet,
    "upernet": smp.UPerNet,
    "segformer": smp.Segformer,
}
"""Decoder name -> smp model class; all take the same keyword arguments."""

EXTRA_HEADS: dict[str, int] = {"binary": len(BINARY_NAMES), "coarse": len(COARSE_NAMES)}
"""Output channels of the heads a hierarchical model adds beside the fine one."""


class HierarchicalModel(nn.Module):
    """Binary, coarse and fine heads on one shared smp encoder + decoder.

    The fine head is the smp model's own segmentation head; the binary and coarse heads copy
    its kernel size and upsampling, so all three predict at the input resolution for every
    decoder (U-Net decodes to full size, UPerNet and SegFormer to 1/4 and upsample in the head).
    """

    def __init__(self, base: SegmentationModel):
        super().__init__()
        self.net = base
        self.heads = nn.ModuleDict(
            {name: _head_like(base.segmentation_head, k) for name, k in EXTRA_HEADS.items()}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not torch.compiler.is_compiling():
            self.net.check_input_shape(x)
        decoded = self.net.decoder(self.net.encoder(x))
        out = {name: head(decoded) for name, head in self.heads.items()}
        out["fine"] = self.net.segmentation_head(decoded)
        return out


def _head_like(fine: nn.Sequential, classes: int) -> SegmentationHead:
    """A head shaped like smp's `fine` head (same kernel and upsampling) for `classes`."""
    conv, upsample = fine[0], fine[1]
    scale = upsample.scale_factor if isinstance(upsample, nn.Upsample) else 1
    head = SegmentationHead(
        conv.in_channels, classes, kernel_size=conv.kernel_size[0], upsampling=int(scale)
    )
    initialize_head(head)
    return head


def _single_head(base: SegmentationModel) -> nn.Module:
    """The smp model itself: its head already predicts the fine classes."""
    return base


HEADS: dict[str, Callable[[SegmentationModel], nn.Module]] = {
    "fine": _single_head,
    "hierarchical": HierarchicalModel,
}


def build_model(cfg: ModelConfig, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The segmentation model named by `cfg`, randomly initialised or with ImageNet weights.

    Encoders with a fixed input size (MaxViT, Swin, CoAtNet) are built for
    ``cfg.image_size``, so any multiple of 32 works but the model then accepts only that size.
    ``encoder_weights="imagenet"`` loads the pretrained encoder from the Hugging Face cache or
    hub and raises ConfigError if it cannot (never a silent random init); ``None`` touches
    no network. UPerNet cannot train on batches of one image (BatchNorm on its 1x1 pooled
    branch): use batch_size >= 2 with it.
    """
    decoder = _lookup(DECODERS, cfg.decoder, "decoder")
    wrap = _lookup(HEADS, cfg.head, "head")
    family(cfg.encoder)  # unknown encoder -> ConfigError listing the valid ones
    kwargs: dict[str, Any] = {
        "encoder_name": cfg.encoder,
        "in_channels": 3,
        "classes": num_classes,
        "encoder_weights": _smp_weights(cfg.encoder, cfg.encoder_weights),
    }
    if cfg.decoder_channels is not None:
        kwargs.update(_decoder_widths(cfg.decoder, cfg.decoder_channels))
    if fixed_input_size(cfg.encoder):
        kwargs["img_size"] = cfg.image_size
    if kwargs["encoder_weights"] is None:
        return wrap(decoder(**kwargs))
    try:  # hub look-ups fail with OSError, unreadable or mismatched weights with RuntimeError
        return wrap(decoder(**kwargs))
    except (OSError, RuntimeError) as exc:
        raise ConfigError(_weights_error(cfg.encoder, _reason(exc))) from exc


def _decoder_widths(decoder: str, channels: tuple[int, ...]) -> dict[str, Any]:
    """smp's keyword for `decoder_channels` (validated by ModelConfig): U-Net takes one width
    per stage, UPerNet and SegFormer a single width."""
    if decoder == "unet":
        return {"decoder_channels": tuple(channels)}
    if decoder == "upernet":
        return {"decoder_channels": channels[0]}
    return {"decoder_segmentation_channels": channels[0]}


def fine_logits(output: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The (B, num_classes, H, W) fine logits of either head type, for metrics and inference."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "fine" in output:
        return output["fine"]
    raise TypeError(f"expected logits or a dict with a 'fine' head, got {type(output).__name__}")


class FineOnly(nn.Module):
    """The model with its fine logits as the single output, which ONNX and torch.export need."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fine_logits(self.model(x))


def family(encoder: str) -> str:
    """CNN, ViT or hybrid: how the benchmark groups encoders."""
    return _lookup(ENCODERS, encoder, "encoder")


def count_parameters(model: nn.Module) -> float:
    """All parameters (trainable or not), in millions."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ConfigError(f"unknown {what} {name!r}; valid {what}s: {', '.join(table)}")
    return table[name]


def fixed_input_size(encoder: str) -> bool:
    """Whether timm builds the encoder for one input size (window or position tables)."""
    if not encoder.startswith("tu-"):
        return False
    pretrained_cfg = timm.models.get_pretrained_cfg(encoder[3:])
    return bool(pretrained_cfg and pretrained_cfg.fixed_input_size)


def _smp_weights(encoder: str, weights: str | None) -> str | bool | None:
    """What smp expects for `weights`: "imagenet" for its own encoders, True for timm's."""
    if weights is None:
        return None
    if weights != "imagenet":
        raise ConfigError(f"encoder_weights={weights!r}: choose imagenet or null")
    if _weights_source(encoder) is None:
        with_weights = [name for name in ENCODERS if _weights_source(name)]
        raise ConfigError(
            f"encoder {encoder!r} has no ImageNet weights in timm/smp; set "
            f"encoder_weights: null, or use one of: {', '.join(with_weights)}"
        )
    return True if encoder.startswith("tu-") else "imagenet"


def _weights_source(encoder: str) -> tuple[str, str | None] | None:
    """The hub repo and revision smp/timm download the encoder's default weights from."""
    if encoder.startswith("tu-"):
        pretrained_cfg = timm.models.get_pretrained_cfg(encoder[3:])
        repo = pretrained_cfg.hf_hub_id if pretrained_cfg else None
        return (repo, None) if repo else None
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    imagenet = settings.get("imagenet")
    return (imagenet["repo_id"], imagenet["revision"]) if imagenet else None


def _reason(exc: BaseException) -> str:
    """The exception and its cause: the hub wraps the useful part (offline, DNS) in __cause__."""
    text = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None:
        text += f" (caused by {type(exc.__cause__).__name__}: {exc.__cause__})"
    return text


def _weights_error(encoder: str, reason: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    repo, revision = _weights_source(encoder) or ("?", None)
    download = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
    return (
        f"could not load the ImageNet weights of encoder {encoder!r} from the Hugging Face "
        f"repo {repo}: {reason}. Either set encoder_weights: null to train from random "
        f"initialisation, or put the weights into the Hugging Face cache where smp/timm look "
        f"for them ({HF_HUB_CACHE}; HF_HOME / HF_HUB_CACHE move it): run `{download}` on a "
        "machine with internet access and copy its cache here."
    )
