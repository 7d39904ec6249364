""" MAFC: multi-accumulated channel-wise patterns with a spatial gate (the MRAP paper's predecessor, docs/mafc.md)

Reference code: https://github.com/nttbdrk25/MAFAttention (no licence; written from the project's spec).
"""
from typing import Optional

import torch
from torch import nn

from timm.layers import get_act_layer, register_notrace_module
from timm.layers.typing import LayerType

from .mrap import SpatialResponseMixin, SqueezeMixin, check_layer_kwargs

__all__ = ['MAFC']


@register_notrace_module  # shape-dependent std of single elements; FX treats the module as a leaf
class MAFC(SqueezeMixin, SpatialResponseMixin, nn.Module):
    """MAFC attention: a channel gate on the per-channel mean and unbiased std (one perceptron, sigmoid), then a
    CBAM-style spatial gate on the channel-wise mean and std maps. Sequential, no residual terms, no top-n."""

    def __init__(
            self,
            channels: int,
            rd_ratio: float = 1. / 16,
            rd_channels: Optional[int] = None,
            spatial_kernel_size: int = 7,
            act_layer: LayerType = nn.ReLU,
            force_act_layer: Optional[LayerType] = None,
            device=None,
            dtype=None,
            **kwargs,
    ):
        """The arguments of ``MRAP`` without ``pool_types`` / ``rate`` (the statistics are fixed: mean and std).

        Raises:
            TypeError: A keyword argument other than these and timm's SE-gate options (``SE_ONLY_ARGS``, ignored).
        """
        check_layer_kwargs(type(self), kwargs)
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        rd_channels = rd_channels or max(1, int(channels * rd_ratio))
        self.fc1 = nn.Linear(2 * channels, rd_channels, **dd)
        self.act = get_act_layer(force_act_layer or act_layer)(inplace=True)
        self.fc2 = nn.Linear(rd_channels, channels, **dd)
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel_size, padding=spatial_kernel_size // 2, bias=False, **dd)
        self.spatial_bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, **dd)
        self._register_squeeze_buffers(channels, **dd)  # means over C as 1x1 convolutions in recorded graphs
        self._init_squeeze_buffers()

    def init_non_persistent_buffers(self) -> None:
        """Initialize non-persistent buffers (after ``to_empty`` of a model built on the meta device)."""
        self._init_squeeze_buffers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_stats = x.float()
        z = torch.cat(self.channel_squeeze(x_stats), dim=1)
        gate_c = torch.sigmoid(self.fc2(self.act(self.fc1(z.to(self.fc1.weight.dtype)))).float())
        x = x * gate_c[:, :, None, None].to(x.dtype)
        x_stats = x.float()
        gate_s = torch.sigmoid(self.spatial_response(self.spatial_squeeze(x_stats)).float())
        return x * gate_s.to(x.dtype)
