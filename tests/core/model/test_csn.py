import pytest
import torch
from torch import nn

from lovecs_core.model.csn import (
    CrossSensorNorm,
    change_csn,
    copy_source_to_target,
    csn_domain,
    csn_layers,
    held_target_statistics,
    replace_bn_with_csn,
)
from lovecs_core.model.networks import SemanticFPN


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)
    )


def test_replace_covers_every_batchnorm_and_keeps_stats():
    torch.manual_seed(0)
    net = small_net()
    net[1].running_mean.fill_(0.5)
    net = replace_bn_with_csn(net)
    layers = csn_layers(net)
    assert len(layers) == 1 and not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(layers[0].running_mean, torch.full((4,), 0.5))
    assert torch.allclose(layers[0].target_running_mean, torch.full((4,), 0.5))


def test_statistics_diverge_per_domain_and_eval_uses_selected_domain():
    torch.manual_seed(0)
    net = replace_bn_with_csn(small_net())
    layer = csn_layers(net)[0]
    net.train()
    source = torch.randn(8, 3, 16, 16)
    target = torch.randn(8, 3, 16, 16) * 3 + 5
    for _ in range(20):
        with csn_domain(net, "source"):
            net(source)
        with csn_domain(net, "target"):
            net(target)
    assert layer.num_batches_tracked == 20 and layer.target_num_batches_tracked == 20
    assert not torch.allclose(layer.running_mean, layer.target_running_mean, atol=0.5)
    net.eval()
    out_src = change_csn(net, source=True)(target)
    out_tgt = change_csn(net, source=False)(target)
    assert not torch.allclose(out_src, out_tgt)
    # the target-mode output equals a plain BN using the target running statistics
    bn = nn.BatchNorm2d(4).eval()
    bn.weight.data, bn.bias.data = layer.weight.data, layer.bias.data
    bn.running_mean, bn.running_var = layer.target_running_mean, layer.target_running_var
    ref = net[3](net[2](bn(net[0](target))))
    assert torch.allclose(out_tgt, ref, atol=1e-5)


def test_change_csn_returns_model_and_context_restores():
    net = replace_bn_with_csn(small_net())
    assert change_csn(net, source=False) is net
    assert all(not l.source for l in csn_layers(net))
    with csn_domain(net, "source"):
        assert all(l.source for l in csn_layers(net))
    assert all(not l.source for l in csn_layers(net))
    with pytest.raises(ValueError):
        with csn_domain(net, "sensor-x"):
            pass


def test_plain_bn_checkpoint_loads_into_csn_model():
    torch.manual_seed(1)
    plain = small_net()
    plain.train()
    plain(torch.randn(4, 3, 8, 8) * 2 + 1)
    csn = replace_bn_with_csn(small_net())
    result = csn.load_state_dict(plain.state_dict(), strict=True)
    assert not result.missing_keys
    layer = csn_layers(csn)[0]
    assert torch.allclose(layer.running_mean, plain[1].running_mean)
    assert torch.allclose(layer.target_running_var, plain[1].running_var)
    plain.eval()
    csn.eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(plain(x), change_csn(csn, source=False)(x), atol=1e-6)


def test_copy_source_to_target_and_per_domain_affine():
    net = replace_bn_with_csn(small_net(), per_domain_affine=True)
    layer = csn_layers(net)[0]
    with torch.no_grad():
        layer.running_mean.fill_(2.0)
        layer.weight.fill_(3.0)
    copy_source_to_target(net)
    assert torch.allclose(layer.target_running_mean, torch.full((4,), 2.0))
    assert torch.allclose(layer.target_weight, torch.full((4,), 3.0))
    assert isinstance(layer, CrossSensorNorm) and layer.per_domain_affine


def test_semantic_fpn_csn_forward_shapes():
    model = replace_bn_with_csn(SemanticFPN(3, 5, encoder="resnet18")).eval()
    assert len(csn_layers(model)) > 10
    with torch.no_grad():
        out = change_csn(model, source=False)(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 5, 64, 64)


def test_held_target_statistics_normalise_as_in_eval_mode_and_stay():
    torch.manual_seed(0)
    net = replace_bn_with_csn(small_net())
    layer = csn_layers(net)[0]
    layer.running_mean.fill_(0.3)
    copy_source_to_target(net)
    target = torch.randn(4, 3, 8, 8) * 3 + 5
    net.eval()
    with csn_domain(net, "target"):
        expected = net(target)
    net.train()
    with held_target_statistics(net), csn_domain(net, "target"):
        held = net(target)
    assert torch.allclose(held, expected)  # running statistics, not the batch's
    assert torch.allclose(layer.target_running_mean, torch.full((4,), 0.3))
    assert layer.target_num_batches_tracked == 0
    with held_target_statistics(net), csn_domain(net, "source"):
        net(target)  # the source slot still learns
    assert layer.num_batches_tracked == 1 and not layer.hold_target
    with csn_domain(net, "target"):
        free = net(target)  # outside the context: batch statistics again
    assert not torch.allclose(free, expected)
    assert layer.target_num_batches_tracked == 1
