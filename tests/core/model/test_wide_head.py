"""The widened classifier: it maps as the plain one until refitted, its random projection and
fitted weights travel in the model file, and a card that names it builds it."""

import pytest
import torch

from lovecs_core.adaptation.absent_classes import switch_off
from lovecs_core.model.card import save_model
from lovecs_core.model.card_fields import HEAD_CONTEXT, HEAD_FEATURES
from lovecs_core.model.networks import (
    TinyConvNet,
    build_model,
    classifier_of,
    model_from_file,
    widen_classifier,
)
from lovecs_core.model.wide_head import CONTEXT, RANDOM_FEATURES, WideHead, window_mean
from lovecs_core.refinement.features import split_network
from lovecs_core.refinement.head import HeadWeights
from tests.core.helpers import tiny_card


def _inputs() -> torch.Tensor:
    return torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))


def test_a_widened_classifier_maps_as_before_and_widens_once():
    torch.manual_seed(0)
    net = TinyConvNet(num_classes=5).eval()
    with torch.no_grad():
        before = net(_inputs())
    head = widen_classifier(net)
    assert isinstance(classifier_of(net), WideHead) and widen_classifier(net) is head
    # the projection reads the 8 features and their window mean
    assert head.projection.shape == (RANDOM_FEATURES, 16) and bool(head.projection.abs().sum() > 0)
    with torch.no_grad():
        assert torch.allclose(net(_inputs()), before, atol=1e-6)


def test_head_weights_over_the_widened_features_are_the_heads_own():
    torch.manual_seed(0)
    net = TinyConvNet(num_classes=5).eval()
    head = widen_classifier(net)
    weights = HeadWeights.of(head)
    assert weights.weight.shape == (5, 16 + RANDOM_FEATURES)
    weights.weight += torch.randn(weights.weight.shape, generator=torch.Generator().manual_seed(2))
    weights.install(head)
    split = split_network(net)
    with torch.no_grad():
        features = split.body(_inputs())  # [N, 2C + R, H, W]
        expected = net(_inputs())
    flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    logits = weights.logits(flat).reshape(2, 24, 24, 5).permute(0, 3, 1, 2)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.equal(HeadWeights.of(head).weight, weights.weight)


def test_the_model_file_keeps_a_widened_head_and_its_projection(tmp_path):
    torch.manual_seed(0)
    card = tiny_card()
    net = build_model(card).eval()
    head = widen_classifier(net)
    with torch.no_grad():
        head.extra.weight.normal_()
    card.architecture.update({HEAD_FEATURES: RANDOM_FEATURES, HEAD_CONTEXT: CONTEXT})
    path = save_model(tmp_path / "wide.lovecs", card, net.state_dict())
    loaded_card, loaded = model_from_file(str(path))
    assert loaded_card.architecture[HEAD_FEATURES] == RANDOM_FEATURES
    assert classifier_of(loaded).context == CONTEXT
    assert torch.equal(classifier_of(loaded).projection, head.projection)
    with torch.no_grad():
        assert torch.allclose(loaded(_inputs()), net(_inputs()), atol=1e-5)


def test_a_class_switched_off_in_a_widened_head_is_never_predicted():
    torch.manual_seed(0)
    net = TinyConvNet(num_classes=5).eval()
    with torch.no_grad():
        widen_classifier(net).extra.weight.normal_()
        common = int(torch.bincount(net(_inputs()).argmax(1).ravel(), minlength=5).argmax())
        switch_off(net, [common], 5)
        assert not (net(_inputs()).argmax(1) == common).any()


@pytest.mark.parametrize("window", [1, 5, 33])
def test_the_window_mean_is_the_plain_mean_of_the_cells_inside_the_map(window: int):
    x = torch.randn(1, 3, 9, 12, generator=torch.Generator().manual_seed(3))
    mean, pad = window_mean(x, window), window // 2
    for row, col in ((0, 0), (4, 6), (8, 11), (2, 10)):
        cells = x[0, :, max(0, row - pad) : row + pad + 1, max(0, col - pad) : col + pad + 1]
        assert torch.allclose(mean[0, :, row, col], cells.mean(dim=(1, 2)), atol=1e-6)


def test_the_context_lets_a_pixel_read_what_lies_around_it():
    torch.manual_seed(0)
    head = WideHead.around(torch.nn.Conv2d(4, 3, 1), context=5)
    with torch.no_grad():
        head.linear.weight[:, 4:].normal_()  # a refit gave the window mean some weight
    x = torch.zeros(1, 4, 9, 9)
    y = x.clone()
    y[0, :, 2, 2] = 1.0  # two cells from the centre: inside its 5 x 5 window
    z = x.clone()
    z[0, :, 0, 0] = 1.0  # outside it
    with torch.no_grad():
        centre = [head(v)[0, :, 4, 4] for v in (x, y, z)]
    assert not torch.allclose(centre[1], centre[0]) and torch.allclose(centre[2], centre[0])
