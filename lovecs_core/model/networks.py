"""Model builders from a card's ``architecture`` entry. Nothing is ever downloaded."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .card import ModelCard, ModelFileError
from .card_fields import HEAD_CONTEXT, HEAD_FEATURES
from .csn import replace_bn_with_csn
from .wide_head import WideHead


class SemanticFPN(nn.Module):
    """Semantic FPN (Kirillov et al.) as in LoveCS: FPN 256 channels, 128-channel decoder summing
    four levels, x4 upsampling; smp's FPN with ``encoder_weights=None``."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        encoder: str = "resnet50",
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.FPN(
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
            decoder_pyramid_channels=pyramid_channels,
            decoder_segmentation_channels=segmentation_channels,
            decoder_merge_policy="add",
            upsampling=4,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyConvNet(nn.Module):
    """A few 3x3 conv + BN + ReLU layers and a 1x1 classifier: for tests and quick demos.

    Its receptive field is ``1 + 2 * depth`` pixels, which tests use to check seam-free tiling.
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 5, width: int = 8, depth: int = 2
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        layers.append(nn.Conv2d(channels, num_classes, 1))
        self.body = nn.Sequential(*layers)
        self.receptive_field = 1 + 2 * depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def architecture(
    arch: str = "fpn",
    encoder: str = "resnet50",
    csn: bool = True,
    per_domain_affine: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """An ``architecture`` entry for a card."""
    entry: dict[str, Any] = {"arch": arch, "csn": csn, "per_domain_affine": per_domain_affine}
    if arch == "fpn":
        entry.update(encoder=encoder, pyramid_channels=256, segmentation_channels=128)
    entry.update(extra)
    return entry


def input_divisor(arch: dict[str, Any]) -> int:
    """Tile sides must be a multiple of this (the encoder's output stride)."""
    return 32 if arch.get("arch") == "fpn" else 1


def _classifier_slot(net: nn.Module) -> nn.Sequential:
    """The sequence whose last module is the network's classifier."""
    if isinstance(net, SemanticFPN):
        return net.net.segmentation_head
    if isinstance(net, TinyConvNet):
        return net.body
    raise ModelFileError(
        f"a refine needs a Semantic FPN or the tiny network, not a {type(net).__name__}"
    )


def classifier_of(net: nn.Module) -> nn.Module:
    """The classifier (a 1x1 convolution or a :class:`WideHead`) of a Semantic FPN (the first
    module of smp's segmentation head, before the x4 upsampling) or of the tiny network."""
    slot = _classifier_slot(net)
    return slot[0] if isinstance(net, SemanticFPN) else slot[-1]


def set_classifier(net: nn.Module, head: nn.Module) -> None:
    """Put ``head`` in place of the network's classifier."""
    slot = _classifier_slot(net)
    slot[0 if isinstance(net, SemanticFPN) else len(slot) - 1] = head


def widen_classifier(net: nn.Module) -> WideHead:
    """The network's classifier, widened in place (it maps exactly as before) if it is plain."""
    head = classifier_of(net)
    if isinstance(head, WideHead):
        return head
    assert isinstance(head, nn.Conv2d)
    wide = WideHead.around(head)
    set_classifier(net, wide)
    return wide


def build_model(card: ModelCard) -> nn.Module:
    """Build the (untrained) network described by the card, with CSN layers if it says so."""
    arch = card.architecture
    name = arch.get("arch")
    if name == "fpn":
        encoder = arch.get("encoder", "resnet50")
        try:
            model: nn.Module = SemanticFPN(
                card.band_count,
                card.num_classes,
                encoder,
                int(arch.get("pyramid_channels", 256)),
                int(arch.get("segmentation_channels", 128)),
            )
        except (KeyError, ValueError) as exc:
            raise ModelFileError(f"cannot build encoder {encoder!r}: {exc}") from exc
    elif name == "tiny":
        model = TinyConvNet(
            card.band_count, card.num_classes, int(arch.get("width", 8)), int(arch.get("depth", 2))
        )
    else:
        raise ModelFileError(f"unknown architecture {name!r} (known: 'fpn', 'tiny')")
    if arch.get(HEAD_FEATURES):
        conv = classifier_of(model)
        assert isinstance(conv, nn.Conv2d)
        features, context = int(arch[HEAD_FEATURES]), int(arch.get(HEAD_CONTEXT, 0))
        set_classifier(model, WideHead(conv.in_channels, conv.out_channels, features, context))
    if arch.get("csn", False):
        replace_bn_with_csn(model, per_domain_affine=bool(arch.get("per_domain_affine", False)))
    return model


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str = "model") -> None:
    """Load weights strictly, turning a mismatch into a clear :class:`ModelFileError`."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shape mismatch
        raise ModelFileError(
            f"{path}: weights do not match the card's architecture "
            f"({str(exc).splitlines()[-1].strip()})"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(
            f"{path}: weights do not match the card's architecture "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )


#: The most parameters a model file may declare (the paper's ResNet-50 FPN has about 28 M).
MAX_PARAMETERS = 200_000_000


def check_weights(card: ModelCard, state: dict[str, torch.Tensor], path: str = "model") -> None:
    """Before allocating anything: build the card's network on the ``meta`` device (no memory),
    refuse it when it is absurdly large, and compare its tensor shapes with the weights'."""
    try:
        with torch.device("meta"):
            skeleton = build_model(card)
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - an architecture entry smp cannot build
        raise ModelFileError(f"{path}: cannot build the card's architecture ({exc})") from exc
    expected = skeleton.state_dict()
    n = sum(t.numel() for t in expected.values())
    if n > MAX_PARAMETERS:
        raise ModelFileError(
            f"{path}: the card declares a network of {n / 1e6:.0f} million parameters (about "
            f"{4 * n / 1e9:.1f} GB), more than this engine accepts "
            f"({MAX_PARAMETERS / 1e6:.0f} million); the file is damaged or not meant for it"
        )
    for key, tensor in expected.items():
        have = state.get(key)
        if have is not None and tuple(have.shape) != tuple(tensor.shape):
            raise ModelFileError(
                f"{path}: weights do not match the card's architecture ({key}: the file holds "
                f"{tuple(have.shape)}, the card describes {tuple(tensor.shape)})"
            )


def model_from_file(path: str) -> tuple[ModelCard, nn.Module]:
    """Load a model file: the card and the network with its weights, in eval mode on CPU."""
    from .card import load_model_file

    card, state = load_model_file(path)
    state = {k: v for k, v in state.items() if not k.startswith("sample.")}
    check_weights(card, state, str(path))
    model = build_model(card)
    load_state(model, state, str(path))
    model.eval()
    return card, model
