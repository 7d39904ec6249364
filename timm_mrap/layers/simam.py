""" SimAM: a simple, parameter-free attention module

Paper: `SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks`
    L. Yang, R.-Y. Zhang, L. Li, X. Xie, ICML 2021 - https://proceedings.mlr.press/v139/yang21o.html
Reference code: https://github.com/ZjjConan/SimAM (written here from the paper's formula).

Each neuron is weighted by the inverse of its minimal energy, from its squared distance to its channel's mean:

    d = (x - mean_HW(x))**2,    y = x * sigmoid(d / (4 * (sum_HW(d) / (H*W - 1) + lambda)) + 0.5)

On a 1 x 1 map, where ``H*W - 1`` is zero, the divisor is taken as 1: ``d`` is 0 there and the gate is
``sigmoid(0.5)`` (the paper's formula gives NaN).
"""
import torch
from torch import nn

from timm.layers import register_notrace_module

__all__ = ['SimAM']


def _over_count_minus_one(total: torch.Tensor, count: int) -> torch.Tensor:
    """``total / max(count - 1, 1)``, the divisor an expression of the runtime size in recorded graphs (symbolic in
    ``torch.export``, a shape tensor under tracing): no branch is decided at export time."""
    if torch.jit.is_scripting():
        return total / max(count - 1, 1)
    elif isinstance(count, torch.Tensor):  # torch.jit.trace (TorchScript-based ONNX) records shapes as tensors
        return total / (count - 1).clamp_min(1)
    else:
        return total / torch.sym_max(count - 1, 1)


@register_notrace_module  # shape-dependent divisor; FX treats the module as a leaf
class SimAM(nn.Module):
    """SimAM attention: no parameters; a drop-in for timm's ``se_layer`` / ``attn_layer`` slots."""

    def __init__(self, channels: int = 0, e_lambda: float = 1e-4, **_):
        """
        Args:
            channels: Ignored (SimAM has no parameters); positional, as the slots call attention layers.
            e_lambda: The energy function's regulariser lambda (the paper's 1e-4).
            **_: Other arguments of the slot (``act_layer``, ``rd_ratio``, ``device``, ``dtype``...), ignored.
        """
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - x.mean((2, 3), keepdim=True)).square()
        var = _over_count_minus_one(d.sum((2, 3), keepdim=True), x.shape[2] * x.shape[3])
        return x * torch.sigmoid(d / (4 * (var + self.e_lambda)) + 0.5)

    def extra_repr(self) -> str:
        return f'e_lambda={self.e_lambda}'
