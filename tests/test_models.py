"""build_model: every encoder family and decoder trains at small sizes; names fail helpfully."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import safetensors.torch
import segmentation_models_pytorch as smp
import timm
import torch

from heritageseg.core.config import LossConfig, ModelConfig
from heritageseg.core.errors import ConfigError
from heritageseg.nn.losses import build_loss
from heritageseg.nn.models import (
    DECODERS,
    ENCODERS,
    build_model,
    count_parameters,
    family,
    fine_logits,
)

SIZE = 64
CONVNEXT, MIT, MAXVIT = "tu-convnext_atto", "mit_b0", "tu-maxvit_pico_rw_256"
SWIN, COATNET = "tu-swin_tiny_patch4_window7_224", "tu-coatnet_0_rw_224"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No hub access and an empty cache: a stray download fails at once instead of retrying.

    huggingface_hub reads HF_HUB_OFFLINE at import, so the constant is patched as well.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def _config(encoder: str, decoder: str = "unet", **changes) -> ModelConfig:
    return ModelConfig(encoder=encoder, decoder=decoder, image_size=SIZE, **changes)


def _train_step(model: torch.nn.Module, size: int = SIZE) -> dict[str, torch.Tensor]:
    """One forward + backward on batch 2 (UPerNet's BatchNorm needs more than one image)."""
    torch.manual_seed(0)
    model.train()
    output = model(torch.randn(2, 3, size, size))
    heads = output if isinstance(output, dict) else {"fine": output}
    loss = sum(logits.square().mean() for logits in heads.values())
    loss.backward()
    return heads


def _assert_finite_grads(model: torch.nn.Module) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    encoder = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert any(g.abs().sum() > 0 for g in encoder), "the encoder gets no gradient"


CASES = [
    *[(encoder, "unet") for encoder in (CONVNEXT, MIT, MAXVIT, SWIN, COATNET)],
    *[
        (encoder, decoder)
        for decoder in ("upernet", "segformer")
        for encoder in (CONVNEXT, MIT, MAXVIT)
    ],
]


@pytest.mark.parametrize(("encoder", "decoder"), CASES)
def test_forward_and_backward(encoder: str, decoder: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(encoder, decoder))
    heads = _train_step(model)
    assert heads["fine"].shape == (2, 16, SIZE, SIZE)
    _assert_finite_grads(model)


@pytest.mark.parametrize("size", [64, 96])
def test_maxvit_is_built_for_the_configured_size(size: int) -> None:
    model = build_model(ModelConfig(encoder=MAXVIT, image_size=size)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 16, size, size)


@pytest.mark.parametrize("decoder", ["unet", "segformer"])
def test_hierarchical_heads_share_one_decoder(decoder: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(MIT, decoder, head="hierarchical"))
    heads = _train_step(model)
    assert {name: tuple(t.shape[:2]) for name, t in heads.items()} == {
        "binary": (2, 2),
        "coarse": (2, 4),
        "fine": (2, 16),
    }
    assert all(t.shape[-2:] == (SIZE, SIZE) for t in heads.values())
    for head in model.heads.values():
        assert all(
            torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in head.parameters()
        )
    _assert_finite_grads(model.net)
    assert safetensors.torch.save(model.state_dict())  # checkpoints: no shared tensors


def test_fine_logits_of_either_output() -> None:
    logits = torch.zeros(2, 16, 4, 4)
    assert fine_logits(logits) is logits
    assert fine_logits({"binary": torch.zeros(2, 2, 4, 4), "fine": logits}) is logits
    with pytest.raises(TypeError):
        fine_logits([logits])


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build_model(_config("resnet50"))
    message = str(error.value)
    assert "resnet50" in message
    for name in (CONVNEXT, MIT, "mit_b5", MAXVIT, SWIN, COATNET):
        assert name in message
    with pytest.raises(ConfigError, match="unet, upernet, segformer"):
        build_model(_config(MIT, "fpn"))
    with pytest.raises(ConfigError, match="fine, hierarchical"):
        build_model(_config(MIT, head="multi"))
    with pytest.raises(ConfigError, match="mit_b0"):
        family("vit_base")


def test_encoder_table_names_real_models_and_families() -> None:
    assert set(DECODERS) == {"unet", "upernet", "segformer"}
    assert set(ENCODERS.values()) == {"CNN", "ViT", "hybrid"}
    for size in ("atto", "femto", "pico", "nano", "tiny", "small", "base"):
        assert family(f"tu-convnext_{size}") == "CNN"
    assert [family(f"mit_b{i}") for i in range(6)] == ["ViT"] * 6
    assert family(SWIN) == "ViT"
    assert family(MAXVIT) == family(COATNET) == family("tu-maxvit_tiny_tf_384") == "hybrid"
    for name in ENCODERS:
        known = timm.is_model(name[3:]) if name.startswith("tu-") else name in smp.encoders.encoders
        assert known, name


@pytest.mark.parametrize("encoder", [MIT, CONVNEXT])
def test_imagenet_weights_offline_fail_fast_with_the_fix(encoder: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        build_model(_config(encoder, encoder_weights="imagenet"))
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert encoder in message
    assert "encoder_weights: null" in message
    assert "Hugging Face cache" in message
    assert "offline" in message.lower()


def test_imagenet_weights_that_do_not_exist_are_an_error() -> None:
    with pytest.raises(ConfigError, match="no ImageNet weights") as error:
        build_model(_config(MAXVIT, encoder_weights="imagenet"))
    assert "tu-maxvit_nano_rw_256" in str(error.value)


def test_count_parameters_of_mit_b0_unet() -> None:
    assert count_parameters(build_model(_config(MIT))) == pytest.approx(5.6, abs=0.1)


SLIM_DECODERS = [("unet", (64, 32, 16, 16, 8)), ("segformer", (64,)), ("upernet", (32,))]


@pytest.mark.parametrize(("decoder", "channels"), SLIM_DECODERS)
def test_decoder_channels_set_the_decoder_widths(decoder: str, channels: tuple) -> None:
    default = build_model(_config(MIT, decoder))
    slim = build_model(_config(MIT, decoder, decoder_channels=channels))
    width = slim.segmentation_head[0].in_channels
    assert width == channels[-1] != default.segmentation_head[0].in_channels
    assert count_parameters(slim) < count_parameters(default)
    _train_step(slim)


@pytest.mark.parametrize("head", ["fine", "hierarchical"])
def test_a_few_steps_on_one_batch_lower_the_loss(head: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(CONVNEXT, head=head))
    loss_fn = build_loss(LossConfig(dice=1.0, ce=1.0), torch.ones(16), head)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(2, 3, SIZE, SIZE)
    target = torch.randint(0, 4, (2, SIZE, SIZE))
    target[:, :8] = 255
    losses = []
    for _ in range(6):
        loss = loss_fn(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
