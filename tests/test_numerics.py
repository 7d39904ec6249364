"""Numerics of the MRAP networks: bf16 autocast and channels_last (every path of one MRAP against float64, torch.compile
included: ``test_mrap_paths.py``).

CUDA fp16 / bf16 AMP runs the same code (statistics upcast with ``x.float()``); it is not testable on this CPU-only
machine. Tolerances are stated at each assertion.
"""
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import timm
import timm_mrap  # noqa: F401  registers the models
from timm_mrap import MRAP
from timm_mrap.layers import mrap_kernels

_REDUCTIONS = {'mean', 'std', 'var', 'std_mean', 'var_mean', 'sum', 'sort', 'topk', 'linalg_vector_norm'}


class _OpRecorder(TorchDispatchMode):
    """Records the input dtype of every reduction op, and the size of every float32 tensor an op makes."""

    def __init__(self):
        super().__init__()
        self.reductions, self.float32_numels = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _REDUCTIONS and isinstance(args[0], torch.Tensor):
            self.reductions.append((name, args[0].dtype))
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.float32_numels.append(t.numel())
        return out


@pytest.mark.parametrize('impl', ['reference', 'fused'])
def test_bf16_autocast_statistics_run_in_float32(impl, monkeypatch):
    """Inside an autocast network MRAP receives bf16 activations; every statistic it takes must be float32 (max is
    exact in any dtype). The operators' CPU kernel also never makes a full-size float32 copy of the activation."""
    monkeypatch.setattr(mrap_kernels, '_CPU_CHUNK_NUMEL', 40 * 9 * 9)  # one sample per chunk
    torch.manual_seed(0)
    m = MRAP(40, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2)).eval()
    m.impl = impl
    x = (torch.randn(2, 40, 9, 9) * 4 + 100).bfloat16()  # a large mean: bf16 statistics would lose the std
    with torch.autocast('cpu', dtype=torch.bfloat16), _OpRecorder() as rec:
        out = m(x)
    assert {name for name, _ in rec.reductions} >= ({'sort', 'mean'} if impl == 'reference' else {'sort'})
    assert all(dtype == torch.float32 for _, dtype in rec.reductions), rec.reductions
    if impl == 'fused':  # inside the operator: the kernel's own ops
        with _OpRecorder() as rec:
            mrap_kernels.TorchKernels.statistics(x)
        assert {'mean', 'sum', 'linalg_vector_norm'} <= {name for name, _ in rec.reductions}
        assert all(dtype == torch.float32 for _, dtype in rec.reductions), rec.reductions
        assert max(rec.float32_numels) < x.numel()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    # against float32 on the same bf16 values: only the bf16 output rounding and perceptron / conv remain
    torch.testing.assert_close(out.float(), m(x.float()), rtol=2e-2, atol=0.)


def test_bf16_autocast_network_close_to_float32_with_finite_gradients():
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv3_mrap', num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
    assert torch.isfinite(out).all()
    # relative L2 error of the logits; measured 0.022 (random init; the attn='none' backbone gives 0.033)
    assert (out.float() - ref).norm() / ref.norm() < 0.05

    model = timm.create_model('mobilenetv2_mrap', num_classes=10).train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('name', ['mobilenetv2_mrap', 'mobilenetv1_mrap'])
def test_channels_last_network_matches_nchw(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).train()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64)
    for mode in ('train', 'eval'):
        getattr(model, mode)(), getattr(model_cl, mode)()
        with torch.no_grad():
            out, out_cl = model(x), model_cl(x.contiguous(memory_format=torch.channels_last))
        # float32 noise of other conv kernels, amplified by a random-init network (measured <= 5e-5 of max)
        torch.testing.assert_close(out_cl, out, atol=2e-4 * out.abs().max().item(), rtol=0.)


def test_channels_last_gradients_match_nchw():
    """The fused backward has its own channels_last branch; without top-n ties the gradients agree elementwise.

    (In full random-init networks, zero channel means after ReLU tie in the top-n sort, and other rounding can route a
    gradient to another tied channel; whole-network gradients differ by a few % there, as they may for any top-k.)
    """
    torch.manual_seed(0)
    m = MRAP(24, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2)).train()
    m_cl = copy.deepcopy(m)
    x = torch.randn(2, 24, 9, 7)
    x_cl = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    x.requires_grad_()
    probe = torch.randn(2, 24, 9, 7)
    (m(x) * probe).sum().backward()
    (m_cl(x_cl) * probe).sum().backward()
    torch.testing.assert_close(x_cl.grad, x.grad, atol=1e-5, rtol=1e-4)
    for p, p_cl in zip(m.parameters(), m_cl.parameters()):
        torch.testing.assert_close(p_cl.grad, p.grad, atol=1e-5 * p.grad.abs().max().item(), rtol=1e-4)
