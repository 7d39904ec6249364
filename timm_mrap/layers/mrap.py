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
"""
import math
from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import get_act_layer, register_notrace_module

__all__ = ['MRAP', 'POOL_TYPES', 'split_top_n', 'interleave', 'pool_statistic']

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
                f'raise the smallest rate to at least 1 / {channels}.')
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

    def channel_weight(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weight ``w_c`` (B x C, float32) of a float32 input."""
        squeezes = [pool_statistic(x, p, [2, 3]) for p in self.pool_types]
        top = [torch.topk(s, n, dim=1).values for s, n in zip(squeezes, self.top_n)]
        z = interleave(top, self.num_common)
        excitation = self.fc2(self.act(self.fc1(z.to(self.fc1.weight.dtype))))
        residual = squeezes[0]
        for s in squeezes[1:]:
            residual = residual * s
        return F.relu(excitation.float() + torch.sigmoid(residual))

    def spatial_weight(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial weight ``w_s`` (B x 1 x H x W, float32) of a float32 input."""
        squeezes = [pool_statistic(x, p, [1], keepdim=True) for p in self.pool_types]
        conv = self.spatial_bn(self.spatial_conv(torch.cat(squeezes, dim=1).to(self.spatial_conv.weight.dtype)))
        residual = squeezes[0]
        for s in squeezes[1:]:
            residual = residual * s
        return conv.float() + torch.sigmoid(residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_stats = x.float()
        w_c = self.channel_weight(x_stats)
        w_s = self.spatial_weight(x_stats)
        scale = 1. + torch.sigmoid(w_c[:, :, None, None] * w_s)
        return x * scale.to(x.dtype)

    def extra_repr(self) -> str:
        return f'pool_types={tuple(self.pool_types)}, rate={self.rate}, top_n={tuple(self.top_n)}'
