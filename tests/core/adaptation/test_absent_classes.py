import numpy as np
import pytest
import torch
from torch import nn

from lovecs_core.adaptation.absent_classes import absent_classes, classifier, switch_off
from lovecs_core.model.networks import TinyConvNet


def test_absent_classes_are_those_below_the_share():
    shares = np.array([0.6, 0.0002, 0.3, 0.0031, 0.0967])
    assert absent_classes(shares, 0.001) == [1]
    assert absent_classes(shares, 0.005) == [1, 3]
    assert absent_classes(shares, 0.0) == []


def test_a_switched_off_class_is_never_predicted():
    torch.manual_seed(0)
    net = TinyConvNet(num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x).argmax(1)
    common = int(torch.bincount(before.ravel(), minlength=5).argmax())
    switch_off(net, [common], 5)
    with torch.no_grad():
        probs = net(x).softmax(1)
    assert float(probs[:, common].max()) == 0.0
    assert not (probs.argmax(1) == common).any()
    others = before != common
    assert torch.equal(probs.argmax(1)[others], before[others])  # the rest unchanged


def test_the_classifier_is_the_last_convolution_with_one_output_per_class():
    net = TinyConvNet(num_classes=5)
    assert classifier(net, 5) is [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    with pytest.raises(ValueError, match="final convolution"):
        classifier(nn.Sequential(nn.Conv2d(3, 5, 1, bias=False)), 5)
