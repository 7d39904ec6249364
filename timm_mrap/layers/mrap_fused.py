""" MRAP's eager fast path: few passes over the activation, one hand-written backward, any float dtype

``mrap_fused(module, x)`` runs an ``MRAP`` module with the full-size work done by a set of kernels:

* ``statistics(x)``: channel and spatial mean / unbiased std, float32, without full-size float32 copies of ``x``;
* ``gate(x, w_c, w_s)``: ``x * (1 + sigmoid(w_c * w_s))`` in the input dtype;
* ``gate_backward``: the gradients of ``w_c`` and ``w_s``;
* ``input_grad``: the whole input gradient in one buffer, gate and statistics terms together.

On CPU the reductions work through cache-sized chunks of a few samples in one reused float32 buffer: no full-size
temporaries (whose page faults cost more than the arithmetic there) and float32 accuracy for bf16 / fp16 inputs.

``TorchKernels`` here builds them from PyTorch ops (CPU and CUDA); ``mrap_triton.TritonKernels`` from Triton kernels.
The small per-sample part between them (top-n, perceptron, spatial conv) runs through autograd as usual, so its
parameters get their gradients from PyTorch itself (``MRAP.weights_from_statistics``).

The input gradient of the mean / std statistics is ``dx = a * x + b`` per reduction, with
``a = g_std / ((n - 1) * std)`` (0 where std is 0, the zero gradient ``torch.std`` gives there) and
``b = g_mean / n - a * mean``.
"""
import math
from typing import Any, List, Optional, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ['TorchKernels', 'mrap_fused', 'select_kernels', 'std_grad_terms']

Stats = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# elements per chunk of the CPU reductions (their float32 work buffers of this size stay in cache)
_CPU_CHUNK_NUMEL = 1 << 18
# largest map the spatial conv runs through PyTorch's direct CPU kernel at batch 1 (its im2col buffer grows with H * W)
_DIRECT_CONV_MAX_HW = 56 * 56


def _mean_std(x: torch.Tensor) -> Stats:
    """Float32 mean and unbiased std over (H, W) (B x C) and over C (B x 1 x H x W), two-pass (exact for constant rows).

    On CPU a few samples at a time go through one reused float32 buffer (the deviations from the mean), so no
    full-size temporary is made and each chunk is read from cache by both passes; bf16 / fp16 chunks are converted on
    the way. On GPU the reductions accumulate in float32 directly (the Triton kernels do it all in one read).
    """
    b, c, h, w = x.shape
    if x.device.type != 'cpu' or b == 0:
        return _mean_std_direct(x)
    rows, buf = _chunk_buffer(x)
    convert = torch.empty_like(buf) if x.dtype != buf.dtype else None
    scale_c, scale_s = 1. / math.sqrt(max(h * w - 1, 1)), 1. / max(c - 1, 1)
    parts = []
    for chunk in x.split(rows) if rows < b else (x,):
        n = chunk.shape[0]
        f = convert[:n].copy_(chunk) if convert is not None else chunk
        mean_c, mean_s = f.mean((2, 3)), f.mean(1, keepdim=True)
        dev = torch.sub(f, mean_c.view(n, c, 1, 1), out=buf[:n])
        std_c = torch.linalg.vector_norm(dev, 2, (2, 3)).mul_(scale_c)  # fused square-sum over the contiguous axes
        std_s = torch.sub(f, mean_s, out=dev).square_().sum(1, keepdim=True).mul_(scale_s).sqrt_()
        parts.append((mean_c, std_c, mean_s, std_s))
    return parts[0] if len(parts) == 1 else tuple(torch.cat(p) for p in zip(*parts))


def _mean_std_direct(x: torch.Tensor) -> Stats:
    """``_mean_std`` through float32-accumulating reductions of the whole tensor (GPU reductions read bf16 / fp16
    directly; one pass: var = (sum of squares - n * mean^2) / (n - 1))."""
    out = []
    for dim, count in (([2, 3], x.shape[2] * x.shape[3]), ([1], x.shape[1])):
        keepdim = dim == [1]
        mean = x.mean(dim, keepdim=keepdim, dtype=_stats_dtype(x))
        sum_sq = torch.linalg.vector_norm(x, 2, dim, keepdim=keepdim, dtype=_stats_dtype(x)).square()
        out += [mean, ((sum_sq - count * mean.square()).clamp_min_(0.) / max(count - 1, 1)).sqrt()]
    return tuple(out)


def _chunk_buffer(x: torch.Tensor) -> Tuple[int, torch.Tensor]:
    """Samples per chunk (cache-sized on CPU, the whole batch on GPU) and a float32 work buffer in ``x``'s layout."""
    b, c, h, w = x.shape
    rows = max(1, _CPU_CHUNK_NUMEL // max(1, c * h * w)) if x.device.type == 'cpu' else b
    memory_format = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    buf = torch.empty((min(rows, b), c, h, w), device=x.device, dtype=_stats_dtype(x), memory_format=memory_format)
    return rows, buf


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics are float32, float64 for float64 inputs."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def std_grad_terms(
        g_mean: Optional[torch.Tensor], g_std: Optional[torch.Tensor], mean: torch.Tensor, std: torch.Tensor,
        count: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` with ``dx = a * x + b`` the input gradient of a mean / unbiased-std reduction over ``count`` items."""
    a = torch.zeros_like(std)
    if g_std is not None and count > 1:
        a = torch.where(std > 0, g_std / (std.clamp_min(torch.finfo(std.dtype).tiny) * (count - 1)), a)
    b = -a * mean
    if g_mean is not None:
        b = b + g_mean / count
    return a, b


class TorchKernels:
    """The full-size work of MRAP from PyTorch ops (CPU or CUDA, float32 / bfloat16 / float16)."""

    @staticmethod
    def statistics(x: torch.Tensor) -> Stats:
        """``mean_c, std_c`` (B x C) and ``mean_s, std_s`` (B x 1 x H x W), float32; the std is unbiased, 0 for one
        element."""
        return _mean_std(x)

    @staticmethod
    def gate(x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor, save: bool) -> Tuple[torch.Tensor, Any]:
        """``x * (1 + sigmoid(w_c * w_s))`` in ``x``'s dtype and layout; with ``save``, also the sigmoid."""
        gate = torch.empty_like(x)
        # in x's dtype: a float32 product written to a bf16 / fp16 buffer takes a slow unvectorized path on CPU
        torch.mul(w_c.to(x.dtype)[:, :, None, None], w_s.to(x.dtype), out=gate)
        gate.sigmoid_()
        if not save:
            return torch.addcmul(x, x, gate, out=gate), None
        return torch.addcmul(x, x, gate), gate

    @staticmethod
    def gate_backward(
            grad: torch.Tensor, x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor, gate: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, Any]:
        """Float32 gradients of ``w_c`` (B x C) and ``w_s`` (B x 1 x H x W).

        ``grad * x * gate * (1 - gate)`` is formed a few samples at a time in one reused float32 buffer and reduced
        by batched matrix products, so it is exact in float32 and never full-size.
        """
        b, c, h, w = x.shape
        channels_last = _is_channels_last(x)
        rows, buf = _chunk_buffer(x)
        grad_c, grad_s = [], []
        for start in range(0, b, rows):
            sl = slice(start, start + rows)
            n = min(rows, b - start)
            grad_z = torch.mul(grad[sl], x[sl], out=buf[:n]).mul_(gate[sl])
            grad_z.addcmul_(grad_z, gate[sl], value=-1.)  # grad * x * gate * (1 - gate)
            ws, wc = w_s[sl].reshape(n, h * w, 1), w_c[sl].reshape(n, c, 1)
            if channels_last:  # reduce over n x HW x C
                flat = grad_z.permute(0, 2, 3, 1).reshape(n, h * w, c)
                grad_c.append(torch.bmm(ws.transpose(1, 2), flat).view(n, c))
                grad_s.append(torch.bmm(flat, wc).view(n, 1, h, w))
            else:
                flat = grad_z.view(n, c, h * w)
                grad_c.append(torch.bmm(flat, ws).view(n, c))
                grad_s.append(torch.bmm(wc.transpose(1, 2), flat).view(n, 1, h, w))
        if len(grad_c) == 1:
            return grad_c[0], grad_s[0], None
        return torch.cat(grad_c), torch.cat(grad_s), None

    @staticmethod
    def input_grad(
            grad: torch.Tensor, x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor, gate: torch.Tensor,
            work: Any, a_c: torch.Tensor, b_c: torch.Tensor, a_s: torch.Tensor, b_s: torch.Tensor,
    ) -> torch.Tensor:
        """``grad * (1 + gate) + (a_c + a_s) * x + b_c + b_s`` in ``x``'s dtype, built in one buffer."""
        dx = torch.addcmul(grad, grad, gate)
        dx.addcmul_(x, a_c[:, :, None, None]).addcmul_(x, a_s)
        return dx.add_(b_c[:, :, None, None]).add_(b_s)


def _triton_kernels():
    from .mrap_triton import TritonKernels
    return TritonKernels


def select_kernels(impl: str, x: torch.Tensor):
    """The kernels ``impl`` stands for on ``x``: under ``'auto'`` Triton for CUDA float32 / bf16 / fp16 tensors, else
    PyTorch ops."""
    if impl == 'triton':
        kernels = _triton_kernels()
        kernels.check_input(x)
        return kernels
    if impl == 'auto' and x.is_cuda and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
        from .mrap_triton import triton_available
        if triton_available():
            return _triton_kernels()
    return TorchKernels


def _named_statistics(
        module: nn.Module, stats: Stats, max_c: Optional[torch.Tensor], max_s: Optional[torch.Tensor],
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """The squeezes in the module's ``pool_types`` order: channel (B x C) and spatial (B x 1 x H x W) lists."""
    mean_c, std_c, mean_s, std_s = stats
    channel = {'avg': mean_c, 'std': std_c, 'max': max_c}
    spatial = {'avg': mean_s, 'std': std_s, 'max': max_s}
    return [channel[p] for p in module.pool_types], [spatial[p] for p in module.pool_types]


def _max_statistics(module: nn.Module, x: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The max squeezes, when the module uses them (through autograd: their gradient goes to the maxima)."""
    if 'max' not in module.pool_types:
        return None, None
    dtype = _stats_dtype(x)
    return x.amax((2, 3)).to(dtype), x.amax(1, keepdim=True).to(dtype)


class _MRAPFunction(torch.autograd.Function):
    """MRAP with the full-size forward and backward in ``kernels``; the small part is differentiated by autograd."""

    @staticmethod
    def forward(ctx, x, max_c, max_s, module, kernels, *params):
        stats = kernels.statistics(x)
        with torch.enable_grad():
            leaves = [s.detach().requires_grad_() for s in stats]
            extra = [None if m is None else m.detach().requires_grad_() for m in (max_c, max_s)]
            w_c, w_s = module.weights_from_statistics(*_named_statistics(module, leaves, *extra))
        out, saved = kernels.gate(x, w_c.detach(), w_s.detach(), save=True)
        ctx.kernels = kernels
        ctx.graph = (w_c, w_s, leaves, extra, params)
        ctx.save_for_backward(x, *stats, saved)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, mean_c, std_c, mean_s, std_s, saved = ctx.saved_tensors
        w_c, w_s, leaves, extra, params = ctx.graph
        kernels = ctx.kernels
        b, c, h, w = x.shape
        grad = grad.contiguous(memory_format=torch.channels_last if _is_channels_last(x) else torch.contiguous_format)
        with torch.autocast(x.device.type, enabled=False):
            grad_c, grad_s, work = kernels.gate_backward(grad, x, w_c.detach(), w_s.detach(), saved)
        wanted = leaves + [e for e in extra if e is not None] + [p for p in params if p.requires_grad]
        # the small graph is kept (it holds only per-sample tensors) so that retain_graph=True works outside
        found = torch.autograd.grad((w_c, w_s), wanted, (grad_c, grad_s), allow_unused=True, retain_graph=True)
        g_mean_c, g_std_c, g_mean_s, g_std_s = found[:4]
        found = list(found[4:])
        g_extra = [None if e is None else found.pop(0) for e in extra]
        g_params = [found.pop(0) if p.requires_grad else None for p in params]
        dx = None
        if ctx.needs_input_grad[0]:
            with torch.autocast(x.device.type, enabled=False):
                a_c, b_c = std_grad_terms(g_mean_c, g_std_c, mean_c, std_c, h * w)
                a_s, b_s = std_grad_terms(g_mean_s, g_std_s, mean_s, std_s, c)
                dx = kernels.input_grad(grad, x, w_c.detach(), w_s.detach(), saved, work, a_c, b_c, a_s, b_s)
        return (dx, *g_extra, None, None, *g_params)


def mrap_fused(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` (an ``MRAP``) on ``x`` (B x C x H x W) with the kernels its ``impl`` selects."""
    kernels = select_kernels(module.impl, x)
    max_c, max_s = _max_statistics(module, x)
    if torch.is_grad_enabled():
        params = tuple(module.parameters())
        if x.requires_grad or any(p.requires_grad for p in params):
            return _MRAPFunction.apply(x, max_c, max_s, module, kernels, *params)
    stats = kernels.statistics(x)
    # batch 1 on CPU: PyTorch's direct conv kernel beats oneDNN's up to mid-size maps; not under dispatch modes (FLOP
    # counters), which know only the standard conv op
    small_batch_conv = x.device.type == 'cpu' and x.shape[0] == 1 and x.shape[2] * x.shape[3] <= _DIRECT_CONV_MAX_HW \
        and _get_current_dispatch_mode() is None
    w_c, w_s = module.weights_from_statistics(*_named_statistics(module, stats, max_c, max_s), small_batch_conv)
    return kernels.gate(x, w_c, w_s, save=False)[0]
