"""MRAP's registered operators and the switch that picks an implementation: the operators' registration (opcheck),
their kernels, PyTorch's transforms (torch.func, double backward, activation checkpointing, torch.compile) on layers
and networks, and the errors of the switch. Every path against a float64 oracle: ``test_mrap_paths.py``."""
import copy

import pytest
import torch
from torch.utils.checkpoint import checkpoint

import timm
import timm_mrap  # noqa: F401  registers the models
from timm_mrap import MRAP
from timm_mrap.layers import config as mrap_config
from timm_mrap.layers import mrap_kernels, mrap_ops
from timm_mrap.layers.mrap_kernels import TorchKernels

from conftest import DEVICE


def make_pair(impl, channels, pool_types=('avg', 'std'), rate=None, train=True, seed=0):
    """An MRAP with ``impl`` and an identical one with the reference ops (non-trivial BN statistics and affine)."""
    torch.manual_seed(seed)
    fast = MRAP(channels, pool_types=pool_types, rate=rate)
    fast.impl = impl
    with torch.no_grad():
        fast.spatial_bn.running_mean.fill_(0.3)
        fast.spatial_bn.running_var.fill_(2.)
        fast.spatial_bn.weight.fill_(1.5)
        fast.spatial_bn.bias.fill_(-0.2)
    reference = copy.deepcopy(fast)
    reference.impl = 'reference'
    return fast.train(train), reference.train(train)


def reference_copy(model):
    """A copy of ``model`` whose every MRAP runs the reference math."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, MRAP):
            m.impl = 'reference'
    return ref


def forward_backward(module, x, probe):
    """Output, input gradient and parameter gradients of ``sum(module(x) * probe)``."""
    x = x.clone().requires_grad_()
    out = module(x)
    (out.to(probe.dtype) * probe).sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


def post_activation(*shape, dtype=torch.float32, channels_last=False):
    """ReLU-like activations with exact zeros (dead channels are common after ReLU)."""
    x = torch.relu(torch.randn(*shape) * 2 + 0.5).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def assert_matches_reference(impl, channels, h, w, pool_types, rate, train, channels_last, device='cpu'):
    """float32: outputs, the input gradient, every parameter gradient and the BN running statistics."""
    fast, ref = (m.to(device) for m in make_pair(impl, channels, pool_types, rate, train))
    x = post_activation(3, channels, h, w, channels_last=channels_last).to(device)
    probe = torch.randn(x.shape, device=device)
    out_f, gx_f, grads_f = forward_backward(fast, x, probe)
    out_r, gx_r, grads_r = forward_backward(ref, x, probe)
    tol = dict(rtol=1e-4)
    torch.testing.assert_close(out_f, out_r, atol=1e-6 * out_r.abs().max().item(), **tol)
    torch.testing.assert_close(gx_f, gx_r, atol=1e-6 * gx_r.abs().max().item(), **tol)
    for name, g in grads_f.items():
        torch.testing.assert_close(g, grads_r[name], atol=1e-6 * grads_r[name].abs().max().item(), **tol,
                                   msg=f'gradient of {name}')
    if train:
        torch.testing.assert_close(fast.spatial_bn.running_mean, ref.spatial_bn.running_mean)
        torch.testing.assert_close(fast.spatial_bn.running_var, ref.spatial_bn.running_var)
    if channels_last:
        assert out_f.is_contiguous(memory_format=torch.channels_last)
        assert gx_f.is_contiguous(memory_format=torch.channels_last)


# ---- the operators --------------------------------------------------------------------------------------------------

def _op_samples(dtype=torch.float32, channels_last=False):
    x = post_activation(2, 6, 3, 4, dtype=dtype, channels_last=channels_last)
    w_c, w_s = torch.randn(2, 6), torch.randn(2, 1, 3, 4)
    a_c, b_c, a_s, b_s = torch.randn(2, 6), torch.randn(2, 6), torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    return [
        (torch.ops.timm_mrap.mrap_statistics, (x, 'torch')),
        (torch.ops.timm_mrap.mrap_statistics_backward, (x, torch.randn(2, 6), a_c, b_c, torch.randn(2, 1, 3, 4), a_s,
                                                         b_s, 'torch')),
        (torch.ops.timm_mrap.mrap_gate, (x, w_c, w_s, 'torch')),
        (torch.ops.timm_mrap.mrap_gate_backward, (torch.randn_like(x), x, w_c, w_s, 'torch')),
    ]


@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
def test_operators_pass_opcheck(dtype, channels_last):
    """Schema, fake (shape) implementation against the real one, and tracing by torch.compile, for all four."""
    for op, args in _op_samples(dtype, channels_last):
        torch.library.opcheck(op, args, test_utils=('test_schema', 'test_faketensor', 'test_aot_dispatch_static'))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_statistics_kernel_matches_float64_through_chunks(monkeypatch, dtype):
    """Mean / unbiased std over (H, W) and C; small chunks force several passes through the reused buffer."""
    monkeypatch.setattr(mrap_kernels, '_CPU_CHUNK_NUMEL', 2 * 12 * 5 * 7)
    x = (torch.randn(5, 12, 5, 7) * 3 + 100).to(dtype)  # a large mean: one-pass formulas would lose the std
    got = TorchKernels.statistics(x)
    xf = x.double()
    std_c, mean_c = torch.std_mean(xf, (2, 3))
    std_s, mean_s = torch.std_mean(xf, 1, keepdim=True)
    for g, r in zip(got, (mean_c, std_c, mean_s, std_s)):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), r, atol=0., rtol=2e-6)  # float32 accuracy, also for bf16 inputs


@pytest.mark.parametrize('shape', [(3, 10, 4, 6), (2, 10, 1, 1), (2, 1, 3, 3)])
def test_whole_tensor_statistics_are_exact(shape):
    """The kernel's branch off the CPU (whole-tensor reductions), on the GPU where there is one: float32 accuracy
    where the spread is tiny against the mean, exact zeros for constant rows."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.01 + 300
    x[:, :2] = 6.
    mean_c, std_c, mean_s, std_s = (t.cpu() for t in mrap_kernels._whole_tensor_statistics(x.to(DEVICE)))
    xf = x.double()
    want_c = xf.std((2, 3)) if shape[2] * shape[3] > 1 else torch.zeros(shape[:2], dtype=torch.float64)
    want_s = xf.std(1, keepdim=True) if shape[1] > 1 else torch.zeros_like(xf)
    torch.testing.assert_close(std_c.double(), want_c, rtol=2e-6, atol=0.)
    torch.testing.assert_close(std_s.double(), want_s, rtol=2e-6, atol=0.)
    torch.testing.assert_close(mean_c.double(), xf.mean((2, 3)), rtol=2e-7, atol=0.)  # one float32 rounding
    torch.testing.assert_close(mean_s.double(), xf.mean(1, keepdim=True), rtol=2e-7, atol=0.)
    assert (std_c[:, :2] == 0).all()


def test_constant_inputs_give_exact_zero_std_and_finite_gradients():
    """All-zero and saturated (ReLU6 = 6) channels: std exactly 0, gradients finite and equal to the reference's."""
    x = torch.rand(2, 16, 6, 6)
    x[:, :, 1, 2] = 6.  # one position constant over channels
    std_s = TorchKernels.statistics(x)[3]
    assert (std_s[:, :, 1, 2] == 0).all() and (std_s > 0).sum() == 2 * 35
    x[:, :4] = 0.
    x[:, 4:8] = 6.
    std_c = TorchKernels.statistics(x)[1]
    assert (std_c[:, :8] == 0).all() and (std_c[:, 8:] > 0).all()
    fast, ref = make_pair('fused', 16, train=True)
    probe = torch.randn_like(x)
    out_f, gx_f, grads_f = forward_backward(fast, x, probe)
    out_r, gx_r, _ = forward_backward(ref, x, probe)
    assert torch.isfinite(gx_f).all() and all(torch.isfinite(g).all() for g in grads_f.values())
    torch.testing.assert_close(out_f, out_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx_f, gx_r, atol=1e-5, rtol=1e-4)


def test_single_element_reductions_give_zero_std_and_finite_gradients():
    fast, ref = make_pair('fused', 1, train=True)  # one channel, 1 x 1 map: both stds are of one element
    x = torch.randn(2, 1, 1, 1)
    stats = TorchKernels.statistics(x)
    assert (stats[1] == 0).all() and (stats[3] == 0).all()
    probe = torch.randn_like(x)
    _, gx_f, _ = forward_backward(fast, x, probe)
    _, gx_r, _ = forward_backward(ref, x, probe)
    assert torch.isfinite(gx_f).all()
    torch.testing.assert_close(gx_f, gx_r)


@pytest.mark.parametrize('pools', [(('avg', 'std'), None), (('avg', 'std', 'max'), (0.3, 0.5, 0.2))])
def test_gradcheck_and_gradgradcheck_float64(pools):
    """First and second derivatives of the operator path (input and every parameter) against finite differences."""
    torch.manual_seed(0)
    m = MRAP(6, pool_types=pools[0], rate=pools[1]).double().eval()
    assert m.impl == 'auto'
    x = (torch.rand(2, 6, 3, 4, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(m, (x,))
    assert torch.autograd.gradgradcheck(m, (x,))
    assert torch.autograd.gradcheck(m, (x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(),))


# ---- PyTorch's transforms -------------------------------------------------------------------------------------------

def _pair64(channels=12):
    fast, ref = make_pair('auto', channels, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2), train=False)
    return fast.double(), ref.double()


def test_torch_func_grad_and_vmap_match_reference():
    """Per-sample gradients as their users run them: vmap over grad of a functional call, eval-mode BN."""
    from torch.func import functional_call, grad, vmap
    fast, ref = _pair64()
    x = post_activation(4, 12, 5, 5, dtype=torch.float64)

    def per_sample_grads(module):
        params = {k: v.detach() for k, v in module.named_parameters()}
        buffers = dict(module.named_buffers())

        def loss(p, xi):
            return functional_call(module, (p, buffers), (xi[None],)).square().sum()
        return vmap(grad(loss), in_dims=(None, 0))(params, x)
    got, want = per_sample_grads(fast), per_sample_grads(ref)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=k)
    batched = vmap(fast)(x[:, None])  # vmap of the forward alone
    torch.testing.assert_close(batched[:, 0], ref(x), rtol=1e-12, atol=1e-12)


def test_double_backward_matches_reference():
    """Gradient penalties: the graph of the input gradient is differentiated again (create_graph=True)."""
    fast, ref = _pair64()
    x0 = post_activation(2, 12, 5, 5, dtype=torch.float64)
    results = []
    for m in (fast.train(), ref.train()):
        x = x0.clone().requires_grad_()
        gx, = torch.autograd.grad(m(x).square().sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), [x] + list(m.parameters())))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_activation_checkpointing_matches_plain_backward():
    fast, ref = make_pair('auto', 16, train=False)
    x = post_activation(2, 16, 6, 6).requires_grad_()
    checkpoint(fast, x, use_reentrant=False).square().sum().backward()
    grad_ckpt = x.grad.clone()
    x.grad = None
    ref(x).square().sum().backward()
    torch.testing.assert_close(grad_ckpt, x.grad, rtol=1e-4, atol=1e-6 * x.grad.abs().max().item())


@pytest.mark.parametrize('name', ['mobilenetv2_mrap', 'mobilenetv3_mrap'])
def test_network_transforms_and_grad_checkpointing(name):
    """Networks: set_grad_checkpointing (non-reentrant) and per-sample gradients of the default implementation."""
    from torch.func import functional_call, grad, vmap
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5).eval()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, xi, yi):
        return torch.nn.functional.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])
    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    model.train()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert all(torch.isfinite(g).all() for g in per_sample.values())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('name', ['mobilenetv3_small_mrap'])
def test_compile_fullgraph_captures_training_and_inference_of_a_network(name):
    """No graph break in training (forward and backward through AOTAutograd) or inference, and the compiled network
    matches the reference math it captures, run eagerly. The ``aot_eager`` backend runs the captured graphs with eager
    kernels; Inductor's code generation (minutes for a whole network on 2 CPU cores) is exercised on one MRAP by
    ``test_mrap_paths.py``."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5).train()
    eager = reference_copy(model)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    x = torch.randn(2, 3, 64, 64)
    out_c, out_e = compiled(x), eager(x)
    torch.testing.assert_close(out_c, out_e, atol=1e-4 * out_e.abs().max().item(), rtol=0.)
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    grad_c = torch.cat([p.grad.flatten() for p in model.parameters()])
    grad_e = torch.cat([p.grad.flatten() for p in eager.parameters()])
    assert ((grad_c - grad_e).norm() / grad_e.norm()).item() < 1e-3
    model.eval(), eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-4 * out_e.abs().max().item(), rtol=0.)



def test_compile_takes_the_training_math_where_dynamo_reports_exporting(monkeypatch):
    """Dynamo before torch 2.14 replaced ``torch.compiler.is_exporting()`` by True under ``torch.compile`` (emulated
    here). MRAP still takes its training math there, not the exported graph's plain square root, whose gradient is NaN
    on zero-variance channels."""
    monkeypatch.setattr(torch.compiler, 'is_exporting', lambda: True)
    torch._dynamo.reset()
    fast, ref = make_pair('auto', 16, pool_types=('avg', 'std', 'max'))
    x = post_activation(2, 16, 2, 2)
    x[:, :4] = 0.  # dead channels: zero variance over H x W
    probe = torch.randn(x.shape)
    out_c, grad_c, params_c = forward_backward(torch.compile(fast, fullgraph=True, backend='aot_eager'), x, probe)
    out_r, grad_r, params_r = forward_backward(ref, x, probe)
    torch._dynamo.reset()
    assert torch.isfinite(grad_c).all() and all(torch.isfinite(g).all() for g in params_c.values())
    torch.testing.assert_close(out_c, out_r, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad_c, grad_r, atol=1e-5, rtol=1e-4)

# ---- which implementation runs --------------------------------------------------------------------------------------

def test_eager_takes_the_operators_and_recorded_graphs_the_reference(monkeypatch):
    calls = []
    real = TorchKernels.gate
    monkeypatch.setattr(TorchKernels, 'gate', staticmethod(lambda *a, **k: calls.append(1) or real(*a, **k)))
    m = MRAP(16).eval()
    assert m.impl == 'auto'
    x = torch.randn(2, 16, 4, 4)
    m(x)
    assert calls == [1]
    m.impl = 'reference'
    m(x)
    torch.jit.script(MRAP(16).eval())(x)
    torch.jit.trace(MRAP(16).eval(), (x,), check_trace=False)
    graph = torch.export.export(MRAP(16).eval(), (x,)).graph_module.code
    assert calls == [1] and 'timm_mrap' not in graph


def test_auto_picks_the_torch_kernel_on_cpu():
    assert mrap_ops.select_kernel('auto', torch.randn(1, 4, 2, 2)) == 'torch'
    assert mrap_ops.select_kernel('fused', torch.randn(1, 4, 2, 2)) == 'torch'


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    import timm_mrap.layers.mrap_triton  # noqa: F401  defined under the interpreter (conftest), before it is unset
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    m = MRAP(16)
    m.impl = 'triton'
    with pytest.raises(RuntimeError, match="runs on CUDA tensors.*'auto' or 'fused'"):
        m(torch.randn(2, 16, 4, 4))


def test_the_implementation_is_a_switch_not_an_argument(monkeypatch):
    monkeypatch.setattr(mrap_config, '_MRAP_IMPL', 'auto')
    assert MRAP(8).impl == 'auto'
    mrap_config.set_mrap_impl('reference')
    assert MRAP(8).impl == 'reference'
    model = timm.create_model('mobilenetv3_mrap', num_classes=10)  # takes the switch set above
    impls = [m.impl for m in model.modules() if isinstance(m, MRAP)]
    assert len(impls) == 8 and set(impls) == {'reference'}
    with pytest.raises(TypeError, match='mrap_impl.*switch.*set_mrap_impl.*TIMM_MRAP_IMPL'):
        timm.create_model('mobilenetv2_mrap', mrap_impl='fused')
    with pytest.raises(TypeError, match='switch.*set_mrap_impl'):
        MRAP(8, impl='fused')
    with pytest.raises(ValueError, match="Unknown MRAP impl 'cuda'.*'auto', 'reference', 'fused', 'triton'"):
        mrap_config.set_mrap_impl('cuda')


def test_environment_variable_sets_the_default():
    import subprocess
    import sys
    code = 'import timm_mrap, timm; m = timm.create_model("mobilenetv2_mrap"); ' \
           'print({x.impl for x in m.modules() if isinstance(x, timm_mrap.MRAP)})'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         env={**__import__('os').environ, 'TIMM_MRAP_IMPL': 'reference'}).stdout
    assert out.strip() == "{'reference'}"


@pytest.mark.parametrize('name', ['mobilenetv2_mrap', 'mobilenetv3_mrap'])
def test_network_operators_match_reference_with_gradients(name, monkeypatch):
    torch.manual_seed(0)
    fused = timm.create_model(name, num_classes=10).train()
    ref = reference_copy(fused)
    x = torch.randn(2, 3, 64, 64)
    out_f, out_r = fused(x), ref(x)
    torch.testing.assert_close(out_f, out_r, atol=1e-4 * out_r.abs().max().item(), rtol=0.)
    out_f.square().sum().backward()
    out_r.square().sum().backward()
    # float32 noise reorders near-tied statistics in the top-n sort, which moves the gradients of a random-init
    # network by up to a few percent; a wrong gradient term moves them by O(1)
    grad_f = torch.cat([p.grad.flatten() for p in fused.parameters()])
    grad_r = torch.cat([p.grad.flatten() for p in ref.parameters()])
    assert ((grad_f - grad_r).norm() / grad_r.norm()).item() < 5e-2
