""" MRAP: Multiple channel-spatial Residual Attentive Patterns

Paper: `Multiple channel-spatial residual attentive patterns for lightweight networks in image classification`
    T. T. Nguyen, H. A. Pham, V. T. Le, T. P. Nguyen, Machine Learning (2025); later titled SRAP.
Reference code: https://github.com/nttbdrk25/MRAP (no licence; this file is written from the project's spec).

Channel branch: per-channel squeezes (avg / std / max), the top-n sorted values of each interleaved into one vector,
a single excitation perceptron, plus a residual sigmoid of the product of the squeezes. Spatial branch: the same
statistics across channels, a 7x7 conv + BN, plus a residual sigmoid of their product. The two are fused as
``x * (1 + sigmoid(w_c * w_s))``, so every element is scaled by a factor in (1, 2).

Deviations from the reference (documented in the README): the unbiased std of a single element is 0 (the reference
gives NaN), and statistics are computed in float32 under autocast.

Two paths compute the same numbers. ``MRAP._forward_plain`` composes standard ops (the reference path; TorchScript and
``torch.compile`` use it, and Inductor fuses it). The default eager path for float32 inputs uses two autograd
functions with hand-written backward passes: ``_AvgStdPool`` takes the channel and spatial mean / std with one
scratch buffer (two-pass, as accurate as ``torch.std``, but without its slow Welford kernel), and ``_ResidualScale``
applies ``x * (1 + sigmoid(w_c * w_s))`` without full-size temporaries beyond its output. ``MRAP(..., fast=False)``
selects the plain path everywhere.
"""
import math
from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import get_act_layer, register_notrace_module

__all__ = ['MRAP', 'POOL_TYPES', 'split_top_n', 'interleave', 'pool_statistic', 'avg_std_pool', 'residual_scale']

POOL_TYPES = ('avg', 'std', 'max')
_DEFAULT_RATES = {2: (0.5, 0.5), 3: (0.3, 0.5, 0.2)}


def split_top_n(channels: int, rate: Sequence[float]) -> List[int]:
    """Number of top values each pool contributes: int(rate_i * C) for all but the last, the rest for the last."""
    sizes = [int(r * channels) for r in rate[:-1]]
    return sizes + [channels - sum(sizes)]


def interleave(values: List[torch.Tensor], num_common: int) -> torch.Tensor:
    """Interleave B x n_i tensors element by element, then append the leftovers of each in order.

    ``[a1, s1, a2, s2, ...]`` for the first ``num_common`` elements of every list, then ``a[num_common:]``,
    ``s[num_common:]``, ...
    """
    heads = [v[:, :num_common] for v in values]
    out = [torch.stack(heads, dim=2).flatten(1)]
    for v in values:
        out.append(v[:, num_common:])
    return torch.cat(out, dim=1)


def pool_statistic(x: torch.Tensor, pool_type: str, dim: List[int], keepdim: bool = False) -> torch.Tensor:
    """One squeeze of ``x`` over ``dim``: mean, unbiased std (0 where a single element is reduced) or max."""
    if pool_type == 'avg':
        return x.mean(dim, keepdim=keepdim)
    if pool_type == 'max':
        return x.amax(dim, keepdim=keepdim)
    count = 1
    for d in dim:
        count *= x.shape[d]
    if count > 1:
        # torch.std has a zero (not NaN) gradient where the variance is 0, unlike var().sqrt()
        return torch.std(x, dim, correction=1, keepdim=keepdim)
    return torch.zeros_like(x.mean(dim, keepdim=keepdim))


def _std_grad_scale(grad_std: torch.Tensor, std: torch.Tensor, count: int) -> torch.Tensor:
    """``grad_std / ((count - 1) * std)``, and 0 where std is 0 (the zero gradient ``torch.std`` gives there)."""
    nonzero = std > 0
    denom = torch.where(nonzero, std, torch.ones_like(std)) * max(count - 1, 1)
    return torch.where(nonzero, grad_std / denom, torch.zeros_like(std))


class _AvgStdPool(torch.autograd.Function):
    """Mean and unbiased std of a B x C x H x W float32 tensor over (H, W) and over C, sharing one scratch buffer.

    Two-pass (mean, then the sum of squared deviations), so constant inputs give exactly 0. A single-element reduction
    gives std 0 with a zero gradient. The backward builds the input gradient in one buffer:
    ``dx = g_mean / n + g_std * (x - mean) / ((n - 1) * std)`` for both reductions.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        num_hw, num_c = x.shape[2] * x.shape[3], x.shape[1]
        mean_c = x.mean((2, 3), keepdim=True)
        mean_s = x.mean(1, keepdim=True)
        scratch = torch.sub(x, mean_c)
        std_c = scratch.square_().sum((2, 3), keepdim=True).div_(max(num_hw - 1, 1)).sqrt_()
        torch.sub(x, mean_s, out=scratch)
        std_s = scratch.square_().sum(1, keepdim=True).div_(max(num_c - 1, 1)).sqrt_()
        ctx.save_for_backward(x, mean_c, std_c, mean_s, std_s)
        return mean_c, std_c, mean_s, std_s

    @staticmethod
    def backward(ctx, g_mean_c, g_std_c, g_mean_s, g_std_s):
        x, mean_c, std_c, mean_s, std_s = ctx.saved_tensors
        num_hw, num_c = x.shape[2] * x.shape[3], x.shape[1]
        with torch.autocast(x.device.type, enabled=False):
            a_c = _std_grad_scale(g_std_c, std_c, num_hw)
            a_s = _std_grad_scale(g_std_s, std_s, num_c)
            grad = torch.sub(x, mean_c).mul_(a_c).add_(g_mean_c / num_hw)
            grad.addcmul_(x, a_s).add_(g_mean_s / num_c - a_s * mean_s)
        return grad


class _ResidualScale(torch.autograd.Function):
    """``x * (1 + sigmoid(w_c * w_s))`` for float32 ``x`` (B x C x H x W), ``w_c`` (B x C) and ``w_s`` (B x 1 x H x W).

    Inference writes everything into the output buffer; training keeps one buffer for the sigmoid. The backward needs
    two full-size buffers and reduces the broadcast gradients with batched matrix products.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor) -> torch.Tensor:
        gate = torch.empty_like(x)
        torch.mul(w_c[:, :, None, None], w_s, out=gate)
        gate.sigmoid_()
        if not any(ctx.needs_input_grad):
            return torch.addcmul(x, x, gate, out=gate)
        ctx.save_for_backward(x, w_c, w_s, gate)
        return torch.addcmul(x, x, gate)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w_c, w_s, gate = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            grad_x = torch.addcmul(grad, grad, gate) if ctx.needs_input_grad[0] else None
            grad_c = grad_s = None
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                grad_z = torch.mul(grad, x).mul_(gate)
                grad_z.addcmul_(grad_z, gate, value=-1.)  # * gate * (1 - gate)
                b, c, h, w = x.shape
                if grad_z.is_contiguous():
                    grad_z = grad_z.view(b, c, h * w)
                    grad_c = torch.bmm(grad_z, w_s.reshape(b, h * w, 1)).view(b, c)
                    grad_s = torch.bmm(w_c.view(b, 1, c), grad_z).view(b, 1, h, w)
                else:  # channels_last (or other strides): reduce over B x HW x C
                    grad_z = grad_z.permute(0, 2, 3, 1).reshape(b, h * w, c)
                    grad_c = torch.bmm(w_s.reshape(b, 1, h * w), grad_z).view(b, c)
                    grad_s = torch.bmm(grad_z, w_c.reshape(b, c, 1)).view(b, 1, h, w)
        return grad_x, grad_c, grad_s


@torch.jit.unused
def avg_std_pool(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Channel mean / std (B x C x 1 x 1) and spatial mean / std (B x 1 x H x W) of a float32 B x C x H x W tensor."""
    return _AvgStdPool.apply(x)


@torch.jit.unused
def residual_scale(x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor) -> torch.Tensor:
    """``x * (1 + sigmoid(w_c[:, :, None, None] * w_s))`` with few full-size buffers (float32 only)."""
    return _ResidualScale.apply(x, w_c, w_s)


def _validate_pools(pool_types: Sequence[str], rate: Sequence[float]) -> None:
    if not 2 <= len(pool_types) <= 3 or len(set(pool_types)) != len(pool_types):
        raise ValueError(
            f'MRAP pool_types must be two or three distinct names from {POOL_TYPES}, got {tuple(pool_types)}; '
            f"e.g. pool_types=('avg', 'std') or ('avg', 'std', 'max').")
    unknown = [p for p in pool_types if p not in POOL_TYPES]
    if unknown:
        raise ValueError(f'MRAP pool_types {unknown} unknown; choose from {POOL_TYPES}.')
    if len(rate) != len(pool_types):
        raise ValueError(
            f'MRAP rate {tuple(rate)} needs one value per pool type {tuple(pool_types)}; '
            f'e.g. rate={_DEFAULT_RATES[len(pool_types)]}.')
    if any(not 0. < r < 1. for r in rate) or not math.isclose(sum(rate), 1., abs_tol=1e-6):
        raise ValueError(
            f'MRAP rate {tuple(rate)} must hold values in (0, 1) that sum to 1 (sum is {sum(rate):.6g}); '
            f'e.g. rate={_DEFAULT_RATES[len(pool_types)]}.')


@register_notrace_module  # shape-dependent std of single elements; FX treats the module as a leaf
class MRAP(nn.Module):
    """Multiple channel-spatial residual attentive patterns (MRAP).

    Drops in wherever timm takes an SE-style layer (``se_layer=MRAP``, ``get_attn``-style signature).
    """

    def __init__(
            self,
            channels: int,
            rd_ratio: float = 1. / 16,
            rd_channels: Optional[int] = None,
            pool_types: Sequence[str] = ('avg', 'std'),
            rate: Optional[Sequence[float]] = None,
            spatial_kernel_size: int = 7,
            act_layer: Union[str, Type[nn.Module]] = nn.ReLU,
            force_act_layer: Optional[Union[str, Type[nn.Module]]] = None,
            device=None,
            dtype=None,
            **kwargs,
    ):
        """
        Args:
            channels: Number of input (and output) channels.
            rd_ratio: Hidden size of the excitation perceptron relative to ``channels`` (floor, at least 1).
            rd_channels: Explicit hidden size, overrides ``rd_ratio``.
            pool_types: Two or three distinct statistics from ``('avg', 'std', 'max')``, in interleaving order.
            rate: Share of the C perceptron inputs each pool contributes; defaults to (0.5, 0.5) / (0.3, 0.5, 0.2).
            spatial_kernel_size: Kernel of the spatial conv.
            act_layer: Perceptron activation (ReLU in the paper).
            force_act_layer: Overrides ``act_layer``; timm's builder passes the block's activation as ``act_layer``.
            **kwargs: Ignored; accepted so MRAP plugs in where timm passes SE-specific options (e.g. ``gate_layer``).
        """
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        pool_types = tuple(pool_types)
        rate = tuple(float(r) for r in (rate if rate is not None else _DEFAULT_RATES.get(len(pool_types), ())))
        _validate_pools(pool_types, rate)
        top_n = split_top_n(channels, rate)
        if channels >= len(pool_types) and min(top_n) < 1:
            raise ValueError(
                f'MRAP rate {rate} leaves an empty top-n list at {channels} channels (sizes {top_n}); '
                f'every pool needs at least one value, so each rate must be at least 1 / {channels} '
                f'(timm\'s EfficientNet builder also probes its se_layer at 8 channels).')
        self.pool_types: List[str] = list(pool_types)
        self.rate: Tuple[float, ...] = rate
        self.top_n: List[int] = top_n
        self.num_common = min(top_n)

        rd_channels = rd_channels or max(1, int(channels * rd_ratio))
        act_layer = get_act_layer(force_act_layer or act_layer)
        self.fc1 = nn.Linear(channels, rd_channels, **dd)
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Linear(rd_channels, channels, **dd)
        self.spatial_conv = nn.Conv2d(
            len(pool_types), 1, spatial_kernel_size, padding=spatial_kernel_size // 2, bias=False, **dd)
        self.spatial_bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, **dd)
        # eager float32 inputs take the fused path; set False to run the plain reference ops everywhere
        self.fast_path: bool = True

    def _channel_weight_from(self, squeezes: List[torch.Tensor]) -> torch.Tensor:
        """``w_c`` (B x C) from the B x C channel squeezes, one per pool type."""
        top = [torch.topk(s, n, dim=1).values for s, n in zip(squeezes, self.top_n)]
        z = interleave(top, self.num_common)
        excitation = self.fc2(self.act(self.fc1(z.to(self.fc1.weight.dtype))))
        residual = squeezes[0]
        for s in squeezes[1:]:
            residual = residual * s
        return F.relu(excitation.float() + torch.sigmoid(residual))

    def _spatial_weight_from(self, squeezes: List[torch.Tensor]) -> torch.Tensor:
        """``w_s`` (B x 1 x H x W) from the B x 1 x H x W spatial squeezes, one per pool type."""
        conv = self.spatial_bn(self.spatial_conv(torch.cat(squeezes, dim=1).to(self.spatial_conv.weight.dtype)))
        residual = squeezes[0]
        for s in squeezes[1:]:
            residual = residual * s
        return conv.float() + torch.sigmoid(residual)

    def channel_weight(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weight ``w_c`` (B x C, float32) of a float32 input."""
        return self._channel_weight_from([pool_statistic(x, p, [2, 3]) for p in self.pool_types])

    def spatial_weight(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial weight ``w_s`` (B x 1 x H x W, float32) of a float32 input."""
        return self._spatial_weight_from([pool_statistic(x, p, [1], keepdim=True) for p in self.pool_types])

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """Reference path from standard ops (TorchScript, torch.compile, non-float32 inputs, ``fast_path=False``)."""
        x_stats = x.float()
        w_c = self.channel_weight(x_stats)
        w_s = self.spatial_weight(x_stats)
        scale = 1. + torch.sigmoid(w_c[:, :, None, None] * w_s)
        return x * scale.to(x.dtype)

    @torch.jit.unused
    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Eager float32 path: fused statistics and fusion with hand-written backward passes (same numbers)."""
        mean_c, std_c, mean_s, std_s = avg_std_pool(x)
        stats_c = {'avg': mean_c.flatten(1), 'std': std_c.flatten(1)}
        stats_s = {'avg': mean_s, 'std': std_s}
        if 'max' in self.pool_types:
            stats_c['max'] = x.amax((2, 3))
            stats_s['max'] = x.amax(1, keepdim=True)
        w_c = self._channel_weight_from([stats_c[p] for p in self.pool_types])
        w_s = self._spatial_weight_from([stats_s[p] for p in self.pool_types])
        return residual_scale(x, w_c, w_s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing() or not self.fast_path or x.dtype != torch.float32 \
                or x.dim() != 4:  # tracing (jit.trace, the TorchScript ONNX exporter) cannot record autograd.Function
            return self._forward_plain(x)
        if torch.compiler.is_compiling():
            return self._forward_plain(x)  # Inductor fuses the plain ops itself
        return self._forward_fast(x)

    def extra_repr(self) -> str:
        return f'pool_types={tuple(self.pool_types)}, rate={self.rate}, top_n={tuple(self.top_n)}'
