"""MRAP's fused eager path against its plain reference path: forward, backward, edge cases, memory formats."""
import copy

import pytest
import torch

from timm_mrap import MRAP
from timm_mrap.layers.mrap import avg_std_pool, residual_scale

CASES = [
    # channels, H, W, pool_types, rate
    (16, 6, 6, ('avg', 'std'), None),
    (33, 9, 7, ('avg', 'std'), None),  # odd channels: unequal top-n lists
    (20, 5, 5, ('avg', 'std', 'max'), (0.3, 0.5, 0.2)),
    (24, 1, 1, ('avg', 'std'), None),  # 1 x 1 map: spatial std of one element is 0
    (7, 1, 1, ('avg', 'std', 'max'), (0.3, 0.5, 0.2)),
    (40, 3, 8, ('avg', 'std'), (0.3, 0.7)),
]


def _pair(channels, pool_types, rate, train):
    torch.manual_seed(0)
    fast = MRAP(channels, pool_types=pool_types, rate=rate)
    with torch.no_grad():  # non-trivial BN statistics and affine so eval differs from train
        fast.spatial_bn.running_mean.fill_(0.3)
        fast.spatial_bn.running_var.fill_(2.)
        fast.spatial_bn.weight.fill_(1.5)
        fast.spatial_bn.bias.fill_(-0.2)
    plain = copy.deepcopy(fast)
    plain.fast_path = False
    return fast.train(train), plain.train(train)


def _forward_backward(module, x, probe):
    x = x.clone().requires_grad_()
    out = module(x)
    (out * probe).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('channels, h, w, pool_types, rate', CASES)
def test_fast_path_matches_plain_forward_and_backward(channels, h, w, pool_types, rate, train, channels_last):
    fast, plain = _pair(channels, pool_types, rate, train)
    x = torch.relu(torch.randn(3, channels, h, w) * 2 + 0.5)  # post-activation-like, with exact zeros
    probe = torch.randn_like(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out_f, gx_f, grads_f = _forward_backward(fast, x, probe)
    out_p, gx_p, grads_p = _forward_backward(plain, x, probe)
    torch.testing.assert_close(out_f, out_p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_f, gx_p, atol=1e-5, rtol=1e-4)
    assert set(grads_f) == set(grads_p)
    for name, g in grads_f.items():
        torch.testing.assert_close(g, grads_p[name], atol=1e-5, rtol=1e-4, msg=f'gradient of {name}')
    if train:  # the BN running statistics move identically
        torch.testing.assert_close(fast.spatial_bn.running_mean, plain.spatial_bn.running_mean)
        torch.testing.assert_close(fast.spatial_bn.running_var, plain.spatial_bn.running_var)
    if channels_last:
        assert out_f.is_contiguous(memory_format=torch.channels_last)


def test_inference_mode_matches_plain():
    fast, plain = _pair(48, ('avg', 'std'), None, train=False)
    x = torch.randn(2, 48, 10, 10)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)


def test_pool_statistics_match_torch_std_mean():
    x = torch.randn(4, 12, 5, 7, dtype=torch.float64) * 3 + 10
    mean_c, std_c, mean_s, std_s = avg_std_pool(x)
    ref_std_c, ref_mean_c = torch.std_mean(x, (2, 3), keepdim=True)
    ref_std_s, ref_mean_s = torch.std_mean(x, 1, keepdim=True)
    for got, ref in [(mean_c, ref_mean_c), (std_c, ref_std_c), (mean_s, ref_mean_s), (std_s, ref_std_s)]:
        torch.testing.assert_close(got, ref)


def test_pool_statistics_gradcheck():
    """The hand-written backward of the statistics against finite differences (float64)."""
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(avg_std_pool, (x,))


def test_residual_scale_gradcheck():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    w_c = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    w_s = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(residual_scale, (x, w_c, w_s))
    assert torch.autograd.gradcheck(residual_scale, (x.contiguous(memory_format=torch.channels_last), w_c, w_s))


def test_constant_inputs_give_exact_zero_std_and_finite_gradients():
    """All-zero and saturated (ReLU6 = 6) channels: std exactly 0, gradients finite and equal to the plain path's."""
    x = torch.rand(2, 16, 6, 6)
    x[:, :, 1, 2] = 6.  # one position constant over channels
    _, _, _, std_s = avg_std_pool(x)
    assert (std_s[:, :, 1, 2] == 0).all() and (std_s > 0).sum() == 2 * 35
    x[:, :4] = 0.
    x[:, 4:8] = 6.
    _, std_c, _, _ = avg_std_pool(x)
    assert (std_c[:, :8] == 0).all() and (std_c[:, 8:] > 0).all()
    fast, plain = _pair(16, ('avg', 'std'), None, train=True)
    probe = torch.randn_like(x)
    out_f, gx_f, grads_f = _forward_backward(fast, x, probe)
    out_p, gx_p, _ = _forward_backward(plain, x, probe)
    assert torch.isfinite(gx_f).all() and all(torch.isfinite(g).all() for g in grads_f.values())
    torch.testing.assert_close(out_f, out_p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_f, gx_p, atol=1e-5, rtol=1e-4)


def test_single_element_reductions_give_zero_std_and_finite_gradients():
    x = torch.randn(2, 1, 1, 1, requires_grad=True)  # one channel, 1 x 1 map
    stats = avg_std_pool(x)
    assert (stats[1] == 0).all() and (stats[3] == 0).all()
    sum(s.sum() for s in stats).backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.))  # only the two means carry a gradient


def test_fast_path_is_used_in_eager_and_skipped_when_disabled(monkeypatch):
    import timm_mrap.layers.mrap as mrap_module
    calls = []
    real = mrap_module.residual_scale
    monkeypatch.setattr(mrap_module, 'residual_scale', lambda *a: calls.append(1) or real(*a))
    m = MRAP(16)
    m(torch.randn(2, 16, 4, 4))
    assert calls == [1]
    m.fast_path = False
    m(torch.randn(2, 16, 4, 4))
    m.fast_path = True
    m(torch.randn(2, 16, 4, 4, dtype=torch.float64))  # non-float32 inputs take the plain path
    assert calls == [1]


def test_bfloat16_autocast_matches_plain():
    fast, plain = _pair(32, ('avg', 'std'), None, train=False)
    x = torch.randn(2, 32, 8, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_f, out_p = fast(x), plain(x)  # float32 input under autocast: the fast path, statistics in float32
    assert out_f.dtype == out_p.dtype == torch.float32
    torch.testing.assert_close(out_f, out_p, atol=1e-5, rtol=1e-5)
