"""timm's model properties for every registered name, in the manner of timm's own tests/test_models.py."""
import pytest
import torch
from torch import nn

import timm
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

from timm_mrap import MRAP

MODELS = timm.list_models(['*_mrap', '*_mafc'])
MRAP_MODELS = timm.list_models('*_mrap')
IMG = 64
NUM_CLASSES = 7


def _input(size: int = IMG, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_registry_lists_the_models():
    assert set(timm.list_models('*mrap*')) >= {
        'mobilenetv1_mrap', 'mobilenetv2_mrap', 'mobilenetv3_mrap', 'mobilenetv3_small_mrap'}
    assert 'mobilenetv2_mrap.rein100' in timm.list_pretrained('*mrap*')


@pytest.mark.parametrize('name', MODELS)
def test_forward(name):
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(_input())
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('name', MODELS)
def test_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=NUM_CLASSES).train()
    model(_input()).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f'non-finite gradient for {bad[:5]}'


@pytest.mark.parametrize('name', MODELS)
def test_default_cfg(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert cfg['hf_hub_id'] and cfg['license'] and cfg['paper_name']
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        features = model.forward_features(x)
        assert tuple(features.shape[-2:]) == tuple(cfg['pool_size'])
        assert features.shape[1] == model.num_features
        first_conv = model.get_submodule(cfg['first_conv'])
        assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == 3
        classifier = model.get_submodule(cfg['classifier'])
        assert classifier.out_features == cfg['num_classes'] == model.num_classes

        model.reset_classifier(0)
        assert model(x).shape == (1, model.head_hidden_size)  # MobileNetV3: 1280 after its conv head
        model.reset_classifier(5)
        assert model(x).shape == (1, 5)
        assert model.get_classifier().out_features == 5


@pytest.mark.parametrize('name', MODELS)
def test_features_only_matches_feature_info(name):
    model = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        outputs = model(_input())
    assert len(outputs) == len(model.feature_info.channels()) == 5
    for out, chs, red in zip(outputs, model.feature_info.channels(), model.feature_info.reduction()):
        assert out.shape[1] == chs
        assert out.shape[-1] == IMG // red

    subset = timm.create_model(name, features_only=True, out_indices=(2, 4)).eval()
    with torch.no_grad():
        outs = subset(_input())
    assert [o.shape[1] for o in outs] == subset.feature_info.channels() == model.feature_info.channels()[2::2]


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    feature_model = timm.create_model(name, features_only=True).eval()
    feature_model.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(_input())
        torch.testing.assert_close(final, model.forward_features(_input()))
        for a, b in zip(intermediates, feature_model(_input())):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize('name', MODELS)
def test_meta_device_build_matches_normal_build(name):
    """Built as transformers and accelerate build timm models: on 'meta', ``to_empty``, weights, non-persistent
    buffers from ``init_non_persistent_buffers()``."""
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    with torch.device('meta'):
        meta_model = timm.create_model(name, num_classes=NUM_CLASSES)
    meta_model = meta_model.to_empty(device='cpu').eval()
    meta_model.load_state_dict(model.state_dict())
    for module in meta_model.modules():
        if hasattr(module, 'init_non_persistent_buffers'):
            module.init_non_persistent_buffers()
    with torch.no_grad():
        torch.testing.assert_close(meta_model(_input()), model(_input()), rtol=0, atol=0)


@pytest.mark.parametrize('name', MRAP_MODELS)
def test_in_chans_and_grad_checkpointing(name):
    model = timm.create_model(name, in_chans=1, num_classes=NUM_CLASSES).train()
    x = torch.randn(2, 1, IMG, IMG)
    torch.manual_seed(0)
    ref = model(x)
    model.set_grad_checkpointing(True)
    torch.manual_seed(0)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('name', MODELS)
def test_torchscript(name):
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    scripted = torch.jit.script(model)
    for m in model.modules():  # scripting runs MRAP's reference ops; eager would take the fused ones
        if isinstance(m, MRAP):
            m.impl = 'reference'
    with torch.no_grad():
        torch.testing.assert_close(scripted(_input()), model(_input()))


@pytest.mark.parametrize('name', MODELS)
def test_fx_forward(name):
    """FX tracing as timm's feature extraction does it (attention modules are registered leaves)."""
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    _, eval_nodes = get_graph_node_names(model)  # timm's tracer: registered notrace modules stay leaves
    assert not any('.se.' in n for n in eval_nodes), 'attention modules should be FX leaves'
    fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    with torch.no_grad():
        torch.testing.assert_close(tuple(fx_model(_input()).values())[0], model(_input()))
        fx_features = timm.create_model(name, features_only=True, feature_cls='fx').eval()
        assert [o.shape[1] for o in fx_features(_input())] == fx_features.feature_info.channels()


@pytest.mark.parametrize('name', MODELS)
def test_training_step_at_32px_is_finite(name):
    """32 px inputs reach 1 x 1 maps in the last stage: the reference's unbiased std is NaN there."""
    model = timm.create_model(name, num_classes=NUM_CLASSES).train()
    # lr 0.01: at 32 px / batch 4 even timm's plain mobilenetv2_100 starts with ~1e4 gradients and diverges at 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _input(32, batch=4), torch.arange(4) % NUM_CLASSES
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# reference parameter counts (spec section 2) include backbone.data_bn (3 weights + 3 biases), folded away here
REFERENCE_PARAMS = {
    ('mobilenetv1_mrap', 120): 3_685_352, ('mobilenetv2_mrap', 120): 2_952_000, ('mobilenetv3_mrap', 120): 3_223_626,
    ('mobilenetv1_mrap', 1000): 4_587_352, ('mobilenetv2_mrap', 1000): 4_079_280,
    ('mobilenetv3_mrap', 1000): 4_350_906,
}


@pytest.mark.parametrize('name, num_classes', REFERENCE_PARAMS)
def test_parameter_count_matches_reference(name, num_classes):
    model = timm.create_model(name, num_classes=num_classes)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[(name, num_classes)] - 6


@pytest.mark.parametrize('name, count, first_chs', [
    ('mobilenetv1_mrap', 13, 32), ('mobilenetv2_mrap', 17, 32), ('mobilenetv3_mrap', 8, 72),
    ('mobilenetv3_small_mrap', 9, 16)])
def test_mrap_placement(name, count, first_chs):
    """MRAP sits in the blocks' `se` slot, on the depthwise (expanded) channels, and nowhere else."""
    model = timm.create_model(name)
    mraps = [(n, m) for n, m in model.named_modules() if isinstance(m, MRAP)]
    assert len(mraps) == count
    assert all(n.endswith('.se') for n, _ in mraps)
    assert mraps[0][1].fc1.in_features == first_chs
    for n, m in mraps:
        block = model.get_submodule(n[:-len('.se')])
        assert m.fc1.in_features == block.conv_dw.out_channels
        assert m.fc1.out_features == max(1, m.fc1.in_features // 16)


def test_mobilenetv1_skips_where_shapes_allow():
    model = timm.create_model('mobilenetv1_mrap')
    skips = [b.has_skip for stage in model.blocks for b in stage]
    assert skips == [False, False, True, False, True, False, True, True, True, True, True, False, True]


def test_se_on_v3_is_timms_mobilenetv3_se():
    """attn='se' puts timm's own MobileNetV3-Large SE back; the rest differs only where the reference does."""
    ours = timm.create_model('mobilenetv3_mrap', attn='se', num_classes=1000)
    timm_v3 = timm.create_model('mobilenetv3_large_100')
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    extra_first_block = 16 * 16 + 2 * 16  # the reference's 1x1 expansion conv + BN in the first unit
    head_bias = 1280  # the reference's 960 -> 1280 head conv has no bias; timm's has one
    assert n(ours) - n(timm_v3) == extra_first_block - head_bias
    mrap = timm.create_model('mobilenetv3_mrap', num_classes=1000)
    assert 1.0e6 < n(ours) - n(mrap) < 1.3e6  # spec: V3 + MRAP is ~1.13 M smaller than V3 + SE


def test_se_on_v3_small_is_timms_mobilenetv3_small_se():
    """mobilenetv3_small_mrap is timm's MobileNetV3-Small built the way mobilenetv3_mrap builds Large."""
    ours = timm.create_model('mobilenetv3_small_mrap', attn='se', num_classes=1000)
    timm_v3 = timm.create_model('mobilenetv3_small_100')
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(ours) - n(timm_v3) == 16 * 16 + 2 * 16 - 1024  # first-unit 1x1 expansion + BN; no head bias
    ours_se = [(n, m.conv_reduce.in_channels, m.conv_reduce.out_channels) for n, m in ours.named_modules()
               if hasattr(m, 'conv_reduce')]
    timm_se = [(n, m.conv_reduce.in_channels, m.conv_reduce.out_channels) for n, m in timm_v3.named_modules()
               if hasattr(m, 'conv_reduce')]
    assert ours_se == timm_se and len(ours_se) == 9
    assert [b.conv_dw.stride for s in ours.blocks[:-1] for b in s] == [
        b.conv_dw.stride for s in timm_v3.blocks[:-1] for b in s]
    assert ours.blocks[0][0].conv_pw.weight.shape == (16, 16, 1, 1) and ours.conv_head.bias is None


def test_mrap_model_arguments():
    model = timm.create_model('mobilenetv2_mrap', pool_types=['avg', 'std', 'max'], rate=[0.3, 0.5, 0.2])
    mraps = [m for m in model.modules() if isinstance(m, MRAP)]
    assert all(m.pool_types == ['avg', 'std', 'max'] and m.rate == (0.3, 0.5, 0.2) for m in mraps)
    assert mraps[0].spatial_conv.in_channels == 3


@pytest.mark.parametrize('kwargs, message', [
    (dict(attn='triplet'), 'Unknown attn'),
    (dict(attn='se', pool_types=('avg', 'max')), 'configure MRAP only'),
    (dict(pool_types=('avg', 'mode')), 'unknown'),
    (dict(rate=(0.7, 0.7)), 'sum to 1'),
])
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model('mobilenetv2_mrap', **kwargs)


def test_mrap_as_se_layer_of_other_timm_models():
    model = timm.create_model('efficientnet_b0', se_layer=MRAP, num_classes=3).eval()
    assert sum(isinstance(m, MRAP) for m in model.modules()) == 16
    with torch.no_grad():
        assert torch.isfinite(model(_input())).all()
