""" MRAP's full-size work as four ``torch.ops.timm_mrap`` operators with fakes and vmap rules, differentiated through
``torch.autograd.Function``s (``torch.func`` refuses ``register_autograd``'s); ``kernel``: ``'torch'``
(``mrap_kernels.TorchKernels``) or ``'triton'`` (``mrap_triton.TritonKernels``). Design: ``docs/performance.md``.
"""
from typing import Callable, Sequence, Tuple

import torch
from torch import Tensor

from .mrap_kernels import TorchKernels, memory_format_of, stats_dtype, std_grad_scale

__all__ = ['select_kernel', 'mrap_statistics', 'mrap_gate']


def _kernels(kernel: str):
    if kernel == 'triton':
        from .mrap_triton import TritonKernels
        return TritonKernels
    return TorchKernels


def select_kernel(impl: str, x: Tensor) -> str:
    """The kernel ``impl`` stands for on ``x`` (``'auto'``: Triton for CUDA float tensors where it is installed)."""
    if impl == 'triton':
        from .mrap_triton import TritonKernels
        TritonKernels.check_input(x)
        return 'triton'
    if impl == 'auto' and x.is_cuda and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
        from .mrap_triton import triton_available
        if triton_available():
            return 'triton'
    return 'torch'


def _empty_like_x(x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=memory_format_of(x))


def _fold_vmap(op: Callable) -> Callable:
    """A vmap rule for a per-sample operator: the vmapped dimension is folded into the batch and back."""
    def rule(info, in_dims: Sequence, *args):
        out = op(*[(a.movedim(d, 0) if d is not None else a.expand(info.batch_size, *a.shape)).flatten(0, 1)
                   if isinstance(a, Tensor) else a for a, d in zip(args, in_dims)])
        if isinstance(out, tuple):
            return tuple(o.unflatten(0, (info.batch_size, -1)) for o in out), (0,) * len(out)
        return out.unflatten(0, (info.batch_size, -1)), 0
    return rule


@torch.library.custom_op('timm_mrap::mrap_statistics', mutates_args=())
def _statistics_op(x: Tensor, kernel: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _kernels(kernel).statistics(x)


@_statistics_op.register_fake
def _(x: Tensor, kernel: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    b, c, h, w = x.shape
    return tuple(x.new_empty(shape, dtype=stats_dtype(x)) for shape in ((b, c), (b, c), (b, 1, h, w), (b, 1, h, w)))


@torch.library.custom_op('timm_mrap::mrap_statistics_backward', mutates_args=())
def _statistics_backward_op(
        x: Tensor, mean_c: Tensor, a_c: Tensor, b_c: Tensor, mean_s: Tensor, a_s: Tensor, b_s: Tensor, kernel: str,
) -> Tensor:
    return _kernels(kernel).statistics_backward(x, mean_c, a_c, b_c, mean_s, a_s, b_s)


@torch.library.custom_op('timm_mrap::mrap_gate', mutates_args=())
def _gate_op(x: Tensor, w_c: Tensor, w_s: Tensor, kernel: str) -> Tensor:
    return _kernels(kernel).gate(x, w_c, w_s)


@torch.library.custom_op('timm_mrap::mrap_gate_backward', mutates_args=())
def _gate_backward_op(grad: Tensor, x: Tensor, w_c: Tensor, w_s: Tensor, kernel: str) -> Tuple[Tensor, Tensor, Tensor]:
    return _kernels(kernel).gate_backward(grad, x, w_c, w_s)


@_gate_backward_op.register_fake
def _(grad: Tensor, x: Tensor, w_c: Tensor, w_s: Tensor, kernel: str) -> Tuple[Tensor, Tensor, Tensor]:
    b, c, h, w = x.shape
    dtype = torch.float32 if kernel == 'triton' else stats_dtype(x)
    return _empty_like_x(x), x.new_empty((b, c), dtype=dtype), x.new_empty((b, 1, h, w), dtype=dtype)


_statistics_backward_op.register_fake(lambda x, *args: _empty_like_x(x))
_gate_op.register_fake(lambda x, *args: _empty_like_x(x))
for _op in (_statistics_op, _statistics_backward_op, _gate_op, _gate_backward_op):
    _op.register_vmap(_fold_vmap(_op))


class _Statistics(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, kernel: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return _statistics_op(x, kernel)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.kernel = inputs[1]
        ctx.save_for_backward(inputs[0], *output)

    @staticmethod
    def backward(ctx, g_mean_c: Tensor, g_std_c: Tensor, g_mean_s: Tensor, g_std_s: Tensor):
        x, mean_c, std_c, mean_s, std_s = ctx.saved_tensors
        b, c, h, w = x.shape
        a_c, b_c = std_grad_scale(g_std_c, std_c, h * w), g_mean_c / (h * w)
        a_s, b_s = std_grad_scale(g_std_s, std_s, c), g_mean_s / c
        if torch.is_grad_enabled():  # a graph of the gradient is recorded: differentiable ops
            dev_c, dev_s = x - mean_c[:, :, None, None], x - mean_s
            dev_c, dev_s = dev_c - dev_c.mean((2, 3), keepdim=True), dev_s - dev_s.mean(1, keepdim=True)
            dx = a_c[:, :, None, None] * dev_c + b_c[:, :, None, None] + a_s * dev_s + b_s
            return dx.to(x.dtype), None
        return _statistics_backward_op(x, mean_c, a_c, b_c, mean_s, a_s, b_s, ctx.kernel), None


class _Gate(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, w_c: Tensor, w_s: Tensor, kernel: str) -> Tensor:
        return _gate_op(x, w_c, w_s, kernel)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w_c, w_s, kernel = inputs
        ctx.kernel = kernel
        ctx.save_for_backward(x, w_c, w_s)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w_c, w_s = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of the gradient is recorded: differentiable ops
            sig = torch.sigmoid(w_c[:, :, None, None] * w_s)
            grad_z = grad * x * sig * (1. - sig)
            grad_x = (grad * (1. + sig)).to(x.dtype)
            return grad_x, (grad_z * w_s).sum((2, 3)).to(w_c.dtype), \
                (grad_z * w_c[:, :, None, None]).sum(1, keepdim=True).to(w_s.dtype), None
        grad_x, grad_c, grad_s = _gate_backward_op(grad, x, w_c, w_s, ctx.kernel)
        return grad_x, grad_c.to(w_c.dtype), grad_s.to(w_s.dtype), None


def mrap_statistics(x: Tensor, kernel: str = 'torch') -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``mean_c, std_c`` (B x C) and ``mean_s, std_s`` (B x 1 x H x W) of ``x`` (B x C x H x W), float32 (float64 for
    float64 inputs); the std is unbiased, 0 where one element is reduced, and has a zero gradient where it is 0."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Statistics.apply(x, kernel)
    return _statistics_op(x, kernel)  # nothing to differentiate: the operator alone (autograd.Function costs ~40 us)


def mrap_gate(x: Tensor, w_c: Tensor, w_s: Tensor, kernel: str = 'torch') -> Tensor:
    """``x * (1 + sigmoid(w_c * w_s))`` in ``x``'s dtype and layout, for ``w_c`` (B x C) and ``w_s`` (B x 1 x H x W)."""
    if torch.is_grad_enabled() and (x.requires_grad or w_c.requires_grad or w_s.requires_grad):
        return _Gate.apply(x, w_c, w_s, kernel)
    return _gate_op(x, w_c, w_s, kernel)
