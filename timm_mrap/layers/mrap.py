""" MRAP: Multiple channel-spatial Residual Attentive Patterns

Paper: `Multiple channel-spatial residual attentive patterns for lightweight networks in image classification`
    T. T. Nguyen, H. A. Pham, V. T. Le, T. P. Nguyen, Machine Learning (2025); later titled SRAP.
Reference code: https://github.com/nttbdrk25/MRAP (no licence; this file is written from the project's spec).

For an input ``x`` (B x C x H x W) and the statistics ``p`` in ``pool_types`` (mean, unbiased std, max):

    s_c^p = p over (H, W) of x                                          (B x C, one per statistic)
    s_s^p = p over C of x                                               (B x 1 x H x W)
    z     = interleave(top-n_p sorted values of each s_c^p)             (B x C)
    w_c   = ReLU(W2 ReLU(W1 z + b1) + b2 + sigmoid(prod_p s_c^p))       (B x C)
    w_s   = BN(Conv7x7(concat_p s_s^p)) + sigmoid(prod_p s_s^p)         (B x 1 x H x W)
    y     = x * (1 + sigmoid(w_c * w_s))

so every element is scaled by a factor in (1, 2). n_p = int(rate_p * C) for all statistics but the last, which takes
the rest; the interleaving is [a1, s1, a2, s2, ...], then the leftovers of each list in order.

Deviations from the reference: the unbiased std of a single element is 0 (the reference gives NaN), and statistics
are computed in float32 under autocast.

This file is the math, written once with standard ops: ``MRAP.statistics`` (two-pass, exact for constant rows) and
``MRAP.weights_from_statistics``. It is what TorchScript, ``torch.compile`` (Inductor fuses it) and recorded graphs
(tracing, ONNX, ``torch.export``: ExecuTorch, Core ML, LiteRT) run, and what ``impl='reference'`` runs in eager mode.
Eager mode otherwise computes the full-size work (the statistics, the gate and their gradients) through the
registered operators of ``mrap_ops`` and shares ``weights_from_statistics``; ``timm_mrap.layers.config`` chooses.
"""
import difflib
import inspect
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import get_act_layer, register_notrace_module

from .config import SWITCH_HINT, get_mrap_impl
from .mrap_ops import mrap_gate, mrap_statistics, select_kernel

__all__ = [
    'MRAP', 'POOL_TYPES', 'SE_ONLY_ARGS', 'check_layer_kwargs', 'split_top_n', 'interleave', 'interleave_index',
    'top_values', 'SpatialResponseMixin', 'SqueezeMixin',
]

POOL_TYPES = ('avg', 'std', 'max')
_DEFAULT_RATES = {2: (0.5, 0.5), 3: (0.3, 0.5, 0.2)}
# Options of timm's SE gates that its models bind into an ``se_layer`` / ``attn_layer`` (e.g. MobileNetV3's
# ``partial(SqueezeExcite, gate_layer='hard_sigmoid', rd_round_fn=...)``, ``attn_kwargs=dict(rd_divisor=8)``).
# MRAP and MAFC have no such gate or rounding, so they accept these and ignore them.
SE_ONLY_ARGS = ('gate_layer', 'rd_divisor', 'rd_round_fn')


def check_layer_kwargs(layer: type, kwargs: Dict[str, Any]) -> None:
    """Raise ``TypeError`` if ``kwargs`` (the ``**kwargs`` of ``layer.__init__``) holds more than ``SE_ONLY_ARGS``.

    The message names the unknown arguments, a close accepted name where there is one, and every accepted argument.
    """
    unknown = [k for k in kwargs if k not in SE_ONLY_ARGS]
    if not unknown:
        return
    accepted = [
        n for n, p in inspect.signature(layer.__init__).parameters.items()
        if n != 'self' and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    hints = [f'{k!r} (did you mean {m[0]!r}?)' if (m := difflib.get_close_matches(k, accepted, n=1)) else repr(k)
             for k in unknown]
    raise TypeError(
        f'{layer.__name__} got unexpected keyword argument(s) {", ".join(hints)}; it accepts '
        f'{", ".join(accepted)}, and ignores the SE-gate options {", ".join(SE_ONLY_ARGS)}.')


def split_top_n(channels: int, rate: Sequence[float]) -> List[int]:
    """Number of top values each pool contributes: int(rate_i * C) for all but the last, the rest for the last."""
    sizes = [int(r * channels) for r in rate[:-1]]
    return sizes + [channels - sum(sizes)]


def interleave(values: List[torch.Tensor], num_common: int, sizes: Optional[List[int]] = None) -> torch.Tensor:
    """Interleave B x n_i tensors element by element, then append the leftovers of each in order.

    ``[a1, s1, a2, s2, ...]`` for the first ``num_common`` elements of every list, then ``a[num_common:]``,
    ``s[num_common:]``, ... Static slices, a stack and a concatenation only (no gather, no empty slices), so exported
    graphs keep it inside a delegate. ``sizes``, the lengths of ``values`` as Python ints, keeps traced graphs free of
    shape reads.
    """
    if sizes is None:
        sizes = [v.shape[1] for v in values]
    heads: List[torch.Tensor] = []
    leftovers: List[torch.Tensor] = []
    for v, n in zip(values, sizes):
        heads.append(v if n == num_common else v[:, :num_common])
        if n > num_common:
            leftovers.append(v[:, num_common:])
    out = torch.stack(heads, dim=2).flatten(1)
    return torch.cat([out] + leftovers, dim=1) if len(leftovers) > 0 else out


def interleave_index(top_n: Sequence[int]) -> torch.Tensor:
    """Positions in the concatenated per-pool top-n lists that put them in ``interleave`` order.

    ``torch.cat(tops, 1)[:, interleave_index(top_n)]`` equals ``interleave(tops, min(top_n))``.
    """
    starts = [sum(top_n[:i]) for i in range(len(top_n))]
    ranks = [torch.arange(start, start + n)[None] for start, n in zip(starts, top_n)]
    return interleave(ranks, min(top_n))[0]


def _unbiased_std(mean_sq_dev: torch.Tensor, count: int) -> torch.Tensor:
    """The unbiased std from the mean squared deviation over ``count`` elements: 0 for one element, and a zero (not
    NaN) gradient where it is 0. Recorded graphs get the plain square root, and the factor ``count / max(count - 1, 1)``
    as an expression of the runtime size (symbolic in ``torch.export``, a shape tensor under tracing): no branch is
    decided at export time."""
    if torch.jit.is_scripting() or isinstance(count, int):  # a Python number (torch.sym_max of ints breaks Dynamo)
        var = mean_sq_dev * (count / max(count - 1, 1))
    elif isinstance(count, torch.Tensor):  # torch.jit.trace (TorchScript-based ONNX) records shapes as tensors
        var = mean_sq_dev * (count / (count - 1).clamp_min(1))
    else:
        var = mean_sq_dev * (count / torch.sym_max(count - 1, 1))
    if _exporting():
        return var.sqrt()
    return torch.where(var > 0, var.clamp_min(1e-30).sqrt(), torch.zeros_like(var))


def top_values(s: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` largest values of each row of ``s`` (B x C), largest first.

    Equal values pass their gradient to the lowest channel index, on every device (a stable sort): which of several
    equal values ``topk`` picks differs between CPU and CUDA. Recorded graphs (inference: the same values) take
    ``topk``, the operator every runtime has.
    """
    return torch.sort(s, dim=1, descending=True, stable=True).values[:, :n]


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``; no op at all where it already is (recorded graphs would keep a copy)."""
    return t if t.dtype == dtype else t.to(dtype)


def _product(values: List[torch.Tensor]) -> torch.Tensor:
    out = values[0]
    for v in values[1:]:
        out = out * v
    return out


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


class SpatialResponseMixin:
    """``spatial_response``, the spatial convolution of MRAP and MAFC over their B x 1 x H x W squeezes, for modules
    with a ``spatial_conv`` and a ``spatial_bn``."""

    def spatial_response(self, maps: List[torch.Tensor]) -> torch.Tensor:
        """``spatial_bn(spatial_conv(concat(maps)))`` in the convolution's dtype.

        A ``spatial_conv`` that is not an ``nn.Conv2d`` takes the list of maps itself, with the batch norm folded in
        and ``spatial_bn`` an identity (``timm_mrap.deploy.executorch.BlockedSpatialConv``: no per-pixel
        concatenation).
        """
        maps = [_cast(m, self.spatial_conv.weight.dtype) for m in maps]
        if torch.jit.is_scripting() or isinstance(self.spatial_conv, nn.Conv2d):
            return self.spatial_bn(self.spatial_conv(torch.cat(maps, dim=1)))
        return self._spatial_response_of_maps(maps)

    @torch.jit.unused
    def _spatial_response_of_maps(self, maps: List[torch.Tensor]) -> torch.Tensor:
        """A ``spatial_conv`` that takes the maps as a list (never scripted: lowering copies only)."""
        return self.spatial_bn(self.spatial_conv(maps))


def _exporting() -> bool:
    """True while ``torch.export`` / the ONNX exporters record the graph, False under ``torch.compile``."""
    if not torch.jit.is_scripting():
        return torch.jit.is_tracing() or _torch_exporting() or torch.onnx.is_in_onnx_export()
    return False


def _torch_exporting() -> bool:
    """``torch.compiler.is_exporting()``, which Dynamo before torch 2.14 replaces by True under ``torch.compile`` as
    well; the flag that ``torch.export`` sets tells the two apart."""
    return torch.compiler.is_exporting() and getattr(torch.compiler, '_is_exporting_flag', True)


class SqueezeMixin:
    """Means and two-pass unbiased stds of the input over H x W (B x C) and over C (B x 1 x H x W), shared by MRAP and
    MAFC. Recorded graphs take the means over C as 1x1 convolutions with constant weights (the non-persistent
    ``channel_average`` and ``channel_variance`` buffers; the factor 1 / (C - 1) in the weights), which delegates run
    in their convolution layout; eager mode takes ``mean``."""

    def _register_squeeze_buffers(self, channels: int, device=None, dtype=None) -> None:
        """Register the buffers (filled by ``_init_squeeze_buffers``)."""
        self.register_buffer('channel_average', torch.empty(1, channels, 1, 1, device=device, dtype=dtype),
                             persistent=False)
        self.register_buffer('channel_variance', torch.empty(1, channels, 1, 1, device=device, dtype=dtype),
                             persistent=False)

    def _init_squeeze_buffers(self) -> None:
        """Fill the buffers (at construction and after ``to_empty``)."""
        channels = self.channel_average.shape[1]
        self.channel_average.fill_(1. / channels)
        self.channel_variance.fill_(1. / max(channels - 1, 1))

    def channel_squeeze(self, x: torch.Tensor, with_std: bool = True) -> List[torch.Tensor]:
        """``[mean, std]`` over H x W of ``x``, each B x C (``[mean]`` without ``with_std``)."""
        mean = x.mean((2, 3), keepdim=True)  # 4-D and kept dims: a global average pooling in delegates
        if not with_std:
            return [mean.flatten(1)]
        centred = x - mean
        var = (centred * centred).mean((2, 3), keepdim=True).flatten(1)
        return [mean.flatten(1), _unbiased_std(var, x.shape[2] * x.shape[3])]

    def spatial_squeeze(self, x: torch.Tensor, with_std: bool = True) -> List[torch.Tensor]:
        """``[mean, std]`` over C of ``x``, each B x 1 x H x W (``[mean]`` without ``with_std``)."""
        mean = self._channel_mean(x)
        if not with_std:
            return [mean]
        centred = x - mean
        squared = centred * centred
        if _exporting():  # 1 / (C - 1) in the conv weights: no scalar factor on the B x 1 x H x W variance
            return [mean, F.conv2d(squared, _cast(self.channel_variance, x.dtype)).sqrt()]
        return [mean, _unbiased_std(self._channel_mean(squared), x.shape[1])]

    def _channel_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over C (B x 1 x H x W)."""
        if _exporting():
            return F.conv2d(x, _cast(self.channel_average, x.dtype))
        return x.mean(1, keepdim=True)


@register_notrace_module  # shape-dependent std of single elements; FX treats the module as a leaf
class MRAP(SqueezeMixin, SpatialResponseMixin, nn.Module):
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
            **kwargs: Only the SE-gate options timm binds into an ``se_layer`` (``gate_layer``, ``rd_divisor``,
                ``rd_round_fn``; see ``SE_ONLY_ARGS``), which MRAP accepts and ignores.

        The implementation is not an argument: ``self.impl`` starts as ``get_mrap_impl()`` (``set_mrap_impl`` /
        ``TIMM_MRAP_IMPL``) and can be set on the module.

        Raises:
            TypeError: Any other keyword argument (e.g. a misspelled ``pool_type=``, or ``impl=``).
            ValueError: Bad ``pool_types`` / ``rate``.
        """
        if 'impl' in kwargs:
            raise TypeError(f'MRAP takes no impl argument; {SWITCH_HINT}')
        check_layer_kwargs(type(self), kwargs)
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
        self.impl: str = get_mrap_impl()

        rd_channels = rd_channels or max(1, int(channels * rd_ratio))
        act_layer = get_act_layer(force_act_layer or act_layer)
        self.fc1 = nn.Linear(channels, rd_channels, **dd)
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Linear(rd_channels, channels, **dd)
        self.spatial_conv = nn.Conv2d(
            len(pool_types), 1, spatial_kernel_size, padding=spatial_kernel_size // 2, bias=False, **dd)
        self.spatial_bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, **dd)
        # derived from the hyper-parameters, so not part of the state dict
        self.register_buffer('top_n_index', torch.empty(channels, device=device, dtype=torch.long), persistent=False)
        self._register_squeeze_buffers(channels, **dd)
        self._init_buffers()

    def _init_buffers(self) -> None:
        """Compute and fill non-persistent buffer values."""
        self.top_n_index.copy_(interleave_index(self.top_n))
        self._init_squeeze_buffers()

    def init_non_persistent_buffers(self) -> None:
        """Initialize non-persistent buffers (after ``to_empty`` of a model built on the meta device)."""
        self._init_buffers()

    def weights_from_statistics(
            self, stats_c: List[torch.Tensor], stats_s: List[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Channel weight ``w_c`` (B x C) and spatial weight ``w_s`` (B x 1 x H x W) from the squeezes, in their dtype.

        Args:
            stats_c: Float32 channel squeezes (B x C), one per pool type in ``pool_types`` order.
            stats_s: Float32 spatial squeezes (B x 1 x H x W), likewise.
        """
        if _exporting():  # topk, and static reshapes: no sort, no gather in exported graphs
            tops = [torch.topk(s, n, dim=1).values for s, n in zip(stats_c, self.top_n)]
            z = interleave(tops, min(self.top_n), self.top_n)
        else:  # top-n of each pool, interleaved
            tops = [top_values(s, n) for s, n in zip(stats_c, self.top_n)]
            z = torch.cat(tops, dim=1).index_select(1, self.top_n_index)
        excitation = self.fc2(self.act(self.fc1(_cast(z, self.fc1.weight.dtype))))
        w_c = F.relu(_cast(excitation, z.dtype) + torch.sigmoid(_product(stats_c)))
        w_s = _cast(self.spatial_response(stats_s), z.dtype) + torch.sigmoid(_product(stats_s))
        return w_c, w_s

    def statistics(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Float32 channel squeezes (B x C) and spatial squeezes (B x 1 x H x W) of ``x``, one per pool type.

        The reference math in ops every runtime delegates (``SqueezeMixin``): means over (H, W) by global average
        pooling, means over C by 1x1 convolutions in recorded graphs, the std in two passes (the mean of
        ``(x - mean) ** 2``: exact for constant rows, where a one-pass ``E[x * x] - E[x] ** 2`` cancels). Float64
        inputs keep float64 throughout (for gradient checks).
        """
        x = x if x.dtype == torch.float64 else _cast(x, torch.float32)
        with_std = 'std' in self.pool_types
        channel_squeezes, spatial_squeezes = self.channel_squeeze(x, with_std), self.spatial_squeeze(x, with_std)
        channel, spatial = {'avg': channel_squeezes[0]}, {'avg': spatial_squeezes[0]}
        if with_std:
            channel['std'], spatial['std'] = channel_squeezes[1], spatial_squeezes[1]
        if 'max' in self.pool_types:
            channel['max'] = x.amax((2, 3))
            spatial['max'] = x.amax(1, keepdim=True)
        return [channel[p] for p in self.pool_types], [spatial[p] for p in self.pool_types]

    def channel_weight(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weight ``w_c`` (B x C, float32) of ``x``."""
        return self.weights_from_statistics(*self.statistics(x))[0]

    def spatial_weight(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial weight ``w_s`` (B x 1 x H x W, float32) of ``x``."""
        return self.weights_from_statistics(*self.statistics(x))[1]

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The math in standard ops."""
        w_c, w_s = self.weights_from_statistics(*self.statistics(x))
        attention = torch.sigmoid(w_c[:, :, None, None] * w_s)
        if _exporting():  # no scalar constant: XNNPACK would leave its NHWC layout for it (two full-size transposes)
            return x + x * _cast(attention, x.dtype)
        return x * _cast(1. + attention, x.dtype)

    @torch.jit.unused
    def forward_operators(self, x: torch.Tensor) -> torch.Tensor:
        """The full-size work through the registered operators (``mrap_ops``), with the kernel ``impl`` selects."""
        kernel = select_kernel(self.impl, x)
        mean_c, std_c, mean_s, std_s = mrap_statistics(x, kernel)
        channel = {'avg': mean_c, 'std': std_c}
        spatial = {'avg': mean_s, 'std': std_s}
        if 'max' in self.pool_types:
            channel['max'] = _cast(x.amax((2, 3)), mean_c.dtype)
            spatial['max'] = _cast(x.amax(1, keepdim=True), mean_c.dtype)
        w_c, w_s = self.weights_from_statistics(
            [channel[p] for p in self.pool_types], [spatial[p] for p in self.pool_types])
        return mrap_gate(x, w_c, w_s, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == 'reference' or torch.jit.is_scripting() or _exporting():
            return self.forward_reference(x)
        if torch.compiler.is_compiling():  # Inductor fuses the reference math itself, faster than opaque operators
            return self.forward_reference(x)
        return self.forward_operators(x)

    def extra_repr(self) -> str:
        return f'pool_types={tuple(self.pool_types)}, rate={self.rate}, top_n={tuple(self.top_n)}, impl={self.impl}'
