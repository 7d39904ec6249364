"""swap_attention on timm's own attention CNNs: every SE-style module becomes MRAP on the same channels, and the result
trains, scripts, FX-traces and exports to ONNX like the registered models."""
import pytest
import torch
from torch import nn

import timm
from timm.layers import EcaModule
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

from timm_mrap import MAFC, MRAP, find_attention, swap_attention
from timm_mrap.layers import ATTN_CHOICES, ATTN_LAYERS

IMG = 64
NUM_CLASSES = 5

# the families the README lists as tested: (model, create_model kwargs, attention type timm builds, count)
FAMILIES = {
    'efficientnet': ('efficientnet_b0', {}, 'SqueezeExcite', 16),
    'mobilenetv3_large': ('mobilenetv3_large_100', {}, 'SqueezeExcite', 8),
    'mobilenetv3_small': ('mobilenetv3_small_100', {}, 'SqueezeExcite', 9),
    'regnety': ('regnety_002', {}, 'SEModule', 13),
    'seresnet': ('seresnet18', {}, 'SEModule', 8),
    'ecaresnet': ('ecaresnet26t', {}, 'EcaModule', 8),
    'vovnet_ese': ('ese_vovnet19b_slim_dw', {}, 'EffectiveSEModule', 4),
    'resnet_cbam': ('resnet18', {'block_args': {'attn_layer': 'cbam'}}, 'CbamModule', 8),
}


def _input(batch: int = 2, size: int = IMG) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _create(family: str) -> nn.Module:
    name, kwargs, _, _ = FAMILIES[family]
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=NUM_CLASSES, **kwargs)


def _channels_seen(model: nn.Module, names) -> dict:
    """Channels entering each named module, measured by a forward pass."""
    seen, hooks = {}, []
    for name in names:
        hook = lambda m, args, name=name: seen.__setitem__(name, args[0].shape[1])  # noqa: E731
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    with torch.no_grad():
        model.eval()(_input())
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize('family', FAMILIES)
def test_swap_replaces_every_attention_on_its_channels(family):
    model = _create(family)
    _, _, kind, count = FAMILIES[family]
    found = find_attention(model)
    assert len(found) == count and all(type(m).__name__ == kind for _, m, _ in found)
    names = [n for n, _, _ in found]
    assert {n: c for n, _, c in found} == _channels_seen(model, names)  # also where ECA does not store them
    before = {k: v.clone() for k, v in model.state_dict().items()}

    assert swap_attention(model) is model
    swapped = dict(model.named_modules())
    assert all(isinstance(swapped[n], MRAP) for n in names)
    assert sum(isinstance(m, MRAP) for m in model.modules()) == count
    for name, _, channels in found:
        assert swapped[name].fc1.in_features == channels and swapped[name].fc1.out_features == max(1, channels // 16)
    # the backbone is untouched; only attention keys changed
    after = model.state_dict()
    kept = {k for k in before if not any(k.startswith(n + '.') for n in names)}
    assert kept == {k for k in after if not any(k.startswith(n + '.') for n in names)}
    assert all(torch.equal(before[k], after[k]) for k in kept)


@pytest.mark.parametrize('family', FAMILIES)
def test_swapped_model_trains_and_scripts(family):
    model = swap_attention(_create(family)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(_input(2)), torch.arange(2))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()

    model.eval()
    scripted = torch.jit.script(model)
    for m in model.modules():  # scripting runs MRAP's reference ops; eager takes the fused ones
        if isinstance(m, MRAP):
            m.impl = 'reference'
    with torch.no_grad():
        torch.testing.assert_close(scripted(_input()), model(_input()))


@pytest.mark.parametrize('attn', [a for a in ATTN_CHOICES if a != 'none'])
def test_every_choice_fills_the_empty_slots_of_a_plain_mobilenet(attn):
    model = timm.create_model('mobilenetv2_100', num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match='empty_slots=True'):
        swap_attention(model, attn)
    slots = find_attention(model, empty_slots=True)
    assert len(slots) == 17 and slots[0][2] == 32 and slots[-1][2] == 960  # the depthwise conv's channels
    swap_attention(model, attn, empty_slots=True)
    layer = ATTN_LAYERS[attn][0]
    found = find_attention(model)  # each choice is swappable again, on the same channels
    assert all(isinstance(m, getattr(layer, 'func', layer)) for _, m, _ in found)
    assert [(n, c) for n, _, c in found] == [(n, c) for n, _, c in slots]
    with torch.no_grad():
        out = model.eval()(_input(size=32))
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


def test_swapped_model_fx_traces():
    model = swap_attention(_create('mobilenetv3_small')).eval()
    _, eval_nodes = get_graph_node_names(model)
    assert not any('.se.' in n for n in eval_nodes), 'MRAP should stay an FX leaf'
    fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    with torch.no_grad():
        torch.testing.assert_close(tuple(fx_model(_input()).values())[0], model(_input()))


def test_swapped_model_exports_to_onnx(tmp_path):
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    from timm_mrap.deploy import export_onnx, onnx_parity
    model = swap_attention(_create('mobilenetv3_small')).eval()
    path = export_onnx(model, tmp_path / 'swapped.onnx', input_size=(3, IMG, IMG), exporter='torchscript')
    for size, (diff, scale) in onnx_parity(model, path, [(80, 48)], batch_size=3).items():
        assert diff <= 1e-4 * max(1., scale), f'{size}: |onnx - torch| = {diff} at scale {scale}'


def test_swap_options_and_swapping_back():
    model = _create('seresnet')
    swap_attention(model, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2))
    mraps = [m for m in model.modules() if isinstance(m, MRAP)]
    assert mraps and all(m.pool_types == ['avg', 'std', 'max'] for m in mraps)
    swap_attention(model, 'mafc')  # MRAP / MAFC are swappable too
    assert sum(isinstance(m, MAFC) for m in model.modules()) == 8
    swap_attention(model, 'eca')
    assert sum(isinstance(m, EcaModule) for m in model.modules()) == 8
    swap_attention(model, 'cbam')
    swap_attention(model, 'none')
    assert not find_attention(model) and model.layer1[0].se.__class__ is nn.Identity
    with torch.no_grad():
        assert model.eval()(_input()).shape == (2, NUM_CLASSES)


def test_swap_keeps_device_dtype_and_mode():
    model = _create('regnety').double().eval()
    swap_attention(model)
    mraps = [m for m in model.modules() if isinstance(m, MRAP)]
    assert all(not m.training and m.fc1.weight.dtype == torch.float64 for m in mraps)
    with torch.no_grad():
        assert model(_input().double()).dtype == torch.float64


def test_swap_errors_say_why():
    with pytest.raises(ValueError, match='ResNet has no attention module to swap.*seresnet18'):
        swap_attention(timm.create_model('resnet18'))
    with pytest.raises(ValueError, match='Unknown attn'):
        swap_attention(_create('seresnet'), 'triplet')
    with pytest.raises(ValueError, match='configure MRAP only'):
        swap_attention(_create('seresnet'), 'cbam', pool_types=('avg', 'max'))
    lonely = nn.Sequential(EcaModule(channels=32))  # nothing before it tells its channels
    with pytest.raises(ValueError, match=r'Cannot tell how many channels 0 \(EcaModule\) sees'):
        swap_attention(lonely)
