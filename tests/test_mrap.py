"""MRAP against the reference module fixtures, plus the properties timm relies on (script, FX, compile, autocast)."""
from functools import partial

import pytest
import torch

from timm_mrap import MRAP
from timm_mrap.layers.mrap import top_values

from conftest import (
    DEVICE, assert_matches_fixture_eval, assert_matches_fixture_train, attention_from_fixture, fixture_json,
)

MRAP_FIXTURES = ['mrap_c72_h14', 'mrap_c33_h9', 'mrap_c8_h7', 'mrap_c50_h10_avgstdmax', 'mrap_c40_h12_rate03']
ATOL = 1e-5


# every implementation; Triton's kernels run on the GPU, or through its interpreter on CPU (tests/conftest.py)
IMPLS = ['reference', 'fused', 'triton']


def _device(impl: str) -> str:
    return DEVICE if impl == 'triton' else 'cpu'


def _builder(impl):
    def build(meta):
        m = MRAP(int(meta['channels']), pool_types=fixture_json(meta, 'pool_types'), rate=fixture_json(meta, 'rate'))
        m.impl = impl
        return m
    return build


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('name', MRAP_FIXTURES)
def test_mrap_matches_reference_eval(name, impl):
    assert_matches_fixture_eval(*attention_from_fixture(name, _builder(impl)), atol=ATOL, device=_device(impl))


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('name', MRAP_FIXTURES)
def test_mrap_matches_reference_train_and_gradients(name, impl):
    assert_matches_fixture_train(*attention_from_fixture(name, _builder(impl)), atol=ATOL, device=_device(impl))


def test_hidden_size_and_top_n_follow_the_spec():
    m = MRAP(72)
    assert m.fc1.out_features == 72 // 16 and m.top_n == [36, 36]
    assert MRAP(8).fc1.out_features == 1  # C // 16 == 0 -> 1
    assert MRAP(33).top_n == [16, 17]
    assert MRAP(50, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2)).top_n == [15, 25, 10]
    assert MRAP(8, rd_ratio=1.0).fc1.out_features == 8  # timm's builder probe


@pytest.mark.parametrize('impl', IMPLS)
def test_meta_device_build_restores_the_top_n_index(impl):
    """timm's meta-device convention: build on 'meta', ``to_empty``, load weights, ``init_non_persistent_buffers``."""
    kwargs = dict(pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2))
    ref = MRAP(50, **kwargs).eval()
    with torch.device('meta'):
        meta = MRAP(50, **kwargs)
    ref.impl = meta.impl = impl
    ref = ref.to(_device(impl))
    model = meta.to_empty(device=_device(impl)).eval()
    model.load_state_dict(ref.state_dict())
    model.init_non_persistent_buffers()
    assert torch.equal(model.top_n_index, ref.top_n_index)
    x = torch.randn(2, 50, 6, 6, generator=torch.Generator().manual_seed(0)).to(_device(impl))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize('device', sorted({'cpu', DEVICE}))
def test_equal_statistics_pass_their_gradient_to_the_lowest_channels(device):
    """Top-n of tied values (dead or saturated channels): the same channels get the gradient on every device."""
    s = torch.zeros(2, 40, device=device)
    s[:, 5:20] = 1.
    s.requires_grad_()
    top = top_values(s, 8)
    top.sum().backward()
    assert torch.equal(top.detach().cpu(), torch.ones(2, 8))
    assert s.grad.nonzero()[:, 1].view(2, 8).tolist() == [list(range(5, 13))] * 2


@pytest.mark.parametrize('shape', [(2, 16, 1, 1), (2, 1, 5, 5), (2, 1, 1, 1), (3, 24, 1, 7)])
def test_single_element_reductions_are_finite(shape):
    """1 x 1 maps and single channels: the reference gives NaN (unbiased std of one value), we give std 0."""
    m = MRAP(shape[1]).train()
    x = torch.randn(shape, requires_grad=True)
    out = m(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_zero_variance_channels_keep_finite_gradients():
    """All-zero channels after ReLU are common; var().sqrt() would give NaN gradients there."""
    m = MRAP(16).train()
    x = torch.randn(2, 16, 6, 6)
    x[:, :5] = 0.
    x[:, :, 2, 3] = 0.  # a spatial site that is zero in every channel: zero std across channels
    x.requires_grad_()
    m(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_scale_lies_between_one_and_two():
    m = MRAP(32).eval()
    x = torch.rand(2, 32, 9, 9) + 0.1
    ratio = m(x) / x
    assert ratio.min() >= 1. and ratio.max() <= 2.


def test_autocast_keeps_statistics_in_float32():
    torch.manual_seed(0)
    m = MRAP(48).eval()
    x = torch.randn(2, 48, 10, 10) * 3 + 1
    ref = m(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        w_c = m.channel_weight(x.bfloat16().float())
        out = m(x.bfloat16())
    assert w_c.dtype == torch.float32
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


def test_channels_last_matches_contiguous():
    m = MRAP(24).eval()
    x = torch.randn(2, 24, 11, 7)
    torch.testing.assert_close(m(x.contiguous(memory_format=torch.channels_last)), m(x), atol=1e-5, rtol=1e-5)


def test_torchscript_matches_eager():
    m = MRAP(16, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2)).eval()
    scripted = torch.jit.script(m)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(scripted(x), m(x))
    torch.testing.assert_close(scripted(x[:, :, :1, :1]), m(x[:, :, :1, :1]))  # single-element branch scripted


@pytest.mark.parametrize('kwargs, message', [
    (dict(pool_types=('avg',)), 'two or three distinct'),
    (dict(pool_types=('avg', 'avg')), 'two or three distinct'),
    (dict(pool_types=('avg', 'median')), 'unknown'),
    (dict(rate=(0.6, 0.6)), 'sum to 1'),
    (dict(rate=(0.5, 0.3, 0.2)), 'one value per pool type'),
    (dict(rate=(0.01, 0.99)), 'empty top-n'),
])
def test_bad_configuration_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MRAP(64, **kwargs)


def test_unknown_keyword_is_a_type_error_naming_it():
    """A misspelled argument is an error, not silently dropped; the message lists what MRAP takes."""
    with pytest.raises(TypeError, match="'pool_type'") as e:
        MRAP(32, pool_type=('avg',))
    assert 'pool_types' in str(e.value) and 'rate' in str(e.value)


def test_se_gate_options_are_accepted_and_ignored():
    """timm binds gate_layer / rd_divisor / rd_round_fn into SE layers; MRAP takes them so it drops in there."""
    m = MRAP(32, gate_layer='sigmoid')
    assert m.fc1.out_features == 2
    assert MRAP(32, gate_layer='hard_sigmoid', rd_divisor=8, rd_round_fn=round).fc1.out_features == 2
    # MobileNetV3's binding of its SE layer, through the builder's probe (which reads a TypeError as "no rd_ratio")
    from timm.models._efficientnet_builder import EfficientNetBuilder
    se_layer = partial(MRAP, gate_layer='hard_sigmoid', force_act_layer=torch.nn.ReLU, rd_round_fn=round)
    assert EfficientNetBuilder(se_layer=se_layer).se_has_ratio
