"""The head fit keeps a class an adaptation switched off (bias -1e4) off, without dragging the
other classes with it, and switches it back on when a correction names it."""

import torch

from lovecs_core.adaptation.absent_classes import OFF_BIAS
from lovecs_core.refinement.head import HeadWeights, Labelled, fit_head


def _problem(seed: int = 0):
    """Three classes in two feature dimensions; class 1 switched off; a source sample that still
    labels class 1 (as a model's source sample does)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    y = torch.arange(3).repeat_interleave(60)
    x = centres[y] + 0.5 * torch.randn(180, 2, generator=g)
    start = HeadWeights(centres.clone(), torch.tensor([0.0, OFF_BIAS, 0.0]))
    return start, x, y


def test_a_class_switched_off_stays_off_and_the_others_keep_their_scale():
    start, x, y = _problem()
    clicks = Labelled(x[y == 0][:5], y=torch.zeros(5, dtype=torch.long))
    fitted = fit_head(start, clicks, source=Labelled(x, y=y))
    assert fitted.bias[1] == OFF_BIAS
    assert fitted.bias[[0, 2]].abs().max() < 50  # not dragged toward -1e4
    predicted = fitted.logits(x).argmax(dim=1)
    assert not (predicted == 1).any()
    assert (predicted[y != 1] == y[y != 1]).float().mean() > 0.95


def test_a_correction_naming_a_switched_off_class_switches_it_back_on():
    start, x, y = _problem()
    clicks = Labelled(x[y == 1][:8], y=torch.ones(8, dtype=torch.long))
    fitted = fit_head(start, clicks, source=Labelled(x, y=y))
    assert fitted.bias[1] > OFF_BIAS / 2
    assert (fitted.logits(x[y == 1]).argmax(dim=1) == 1).float().mean() > 0.8


def test_the_benchmark_knobs_hold_the_biases_and_weigh_the_corrections():
    start, x, y = _problem()
    start = HeadWeights(start.weight, torch.zeros(3))
    clicks = Labelled(x[y == 0][:6], y=torch.full((6,), 2, dtype=torch.long))  # "0 is 2"
    free = fit_head(start, clicks, source=Labelled(x, y=y))
    held = fit_head(start, clicks, source=Labelled(x, y=y), bias_l2=100.0)
    assert (held.bias - start.bias).abs().max() < 0.05 < (free.bias - start.bias).abs().max()
    weak = fit_head(start, clicks, source=Labelled(x, y=y), corrections_weight=0.05)

    def says_two(head: HeadWeights) -> float:
        return float((head.logits(clicks.x).argmax(dim=1) == 2).float().mean())

    assert says_two(weak) < says_two(free)
