""" Attention by name: the layer a model puts in its ``se_layer`` slot, like timm's ``create_attn``

``ATTN_CHOICES`` names the attentions the registered models (``attn=...``), ``swap_attention`` and the comparison grid
take; ``resolve_attn`` turns a name into the layer and the reduction ratio (of the channels it sees) that goes with it.
Every lightweight attention of timm's ``get_attn`` is here with timm's own layer, beside MRAP, MAFC and SimAM.

The slot calls ``layer(channels, act_layer=<the block's activation>, rd_ratio=<ratio>, device=..., dtype=...)``
(``rd_ratio`` only for layers that take it). The ratios (reduced channels per channel seen, see ``docs/attentions.md``):

========  =====================================  ============================================================
name      layer                                  reduction
========  =====================================  ============================================================
mrap      ``MRAP`` (ReLU perceptron)             1/16 (paper)
mafc      ``MAFC`` (ReLU perceptron)             1/16 (paper)
se        timm's MobileNet ``SqueezeExcite``     1/4 (timm's MobileNets; MobileNetV3: hard-sigmoid, ReLU, /8)
ese       ``EffectiveSEModule``                  none: one C -> C conv (paper)
eca       ``EcaModule``                          none: 1D conv, kernel from C (paper: gamma 2, b 1)
ecam      ``EcaModule(use_mlp=True)``            1/8, multiple of 8 (timm's experiment)
ceca      ``CecaModule``                         none: circular-padded ECA
ge        ``GatherExcite`` (global extent, MLP)  1/16 (paper, timm)
gc        ``GlobalContext``                      1/16 (paper's r = 16; timm's default is 1/8)
gca       ``GlobalContext`` (additive fusion)    1/16 (as gc)
cbam      ``CbamModule``                         1/16 (paper)
lcbam     ``LightCbamModule``                    1/16 (as cbam)
coord     ``CoordAttn``                          1/32, at least 8, multiple of 8 (paper: max(8, C // 32))
scoord    ``SimpleCoordAttn``                    1/4 x 2/3, multiple of 8 (timm)
ela       ``EfficientLocalAttn``                 none: depthwise 1D convs, kernel 7, GroupNorm (timm)
strip     ``StripAttn``                          none: depthwise 1D convs, kernel 3 (timm)
simam     ``SimAM``                              none: no parameters (paper: lambda 1e-4)
none      nothing                                -
========  =====================================  ============================================================
"""
from functools import partial
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from timm.layers import get_act_layer, get_attn, make_divisible
from timm.layers.gather_excite import GatherExcite
from timm.layers.mlp import ConvMlp
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import round_channels

from .mafc import MAFC
from .mrap import MRAP
from .simam import SimAM

__all__ = ['ATTN_CHOICES', 'ATTN_LAYERS', 'GatherExciteMlp', 'resolve_attn']


class GatherExciteMlp(GatherExcite):
    """timm's Gather-Excite with global extent and its MLP (timm's defaults for ``get_attn('ge')``).

    Built here because timm 1.0.31's ``GatherExcite(use_mlp=True)`` passes ``*dd`` positionally to ``ConvMlp``
    (``TypeError``), and its ``forward`` spells ``keepdims``, which TorchScript refuses.
    """

    def __init__(
            self,
            channels: int,
            rd_ratio: float = 1. / 16,
            rd_divisor: int = 1,
            act_layer: Callable[..., nn.Module] = nn.ReLU,
            gate_layer: Union[str, Callable[..., nn.Module]] = 'sigmoid',
            device=None,
            dtype=None,
    ):
        super().__init__(channels, use_mlp=False, gate_layer=gate_layer, device=device, dtype=dtype)
        rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.)
        self.mlp = ConvMlp(channels, rd_channels, act_layer=get_act_layer(act_layer), device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.mlp(x.mean((2, 3), keepdim=True)))


# name -> (layer for the se slot, reduction ratio of the channels it sees); 1. where the layer has no reduction (any
# non-zero ratio switches the slot on). The table of the module docstring says where each ratio comes from.
ATTN_LAYERS: Dict[str, Tuple[Optional[Callable[..., nn.Module]], float]] = {
    'mrap': (partial(MRAP, force_act_layer=nn.ReLU), 1. / 16),  # the reference perceptron is ReLU in any block
    'mafc': (partial(MAFC, force_act_layer=nn.ReLU), 1. / 16),
    'se': (SqueezeExcite, 0.25),
    'ese': (get_attn('ese'), 1.),
    'eca': (get_attn('eca'), 1.),
    'ecam': (get_attn('ecam'), 1. / 8),
    'ceca': (get_attn('ceca'), 1.),
    'ge': (GatherExciteMlp, 1. / 16),
    'gc': (get_attn('gc'), 1. / 16),
    'gca': (get_attn('gca'), 1. / 16),
    'cbam': (get_attn('cbam'), 1. / 16),
    'lcbam': (get_attn('lcbam'), 1. / 16),
    'coord': (partial(get_attn('coord'), se_factor=1., rd_divisor=8), 1. / 32),
    'scoord': (get_attn('scoord'), 0.25),
    'ela': (get_attn('ela'), 1.),
    'strip': (get_attn('strip'), 1.),
    'simam': (SimAM, 1.),
    'none': (None, 0.),
}
ATTN_CHOICES = tuple(ATTN_LAYERS)


def resolve_attn(
        attn: str = 'mrap',
        pool_types: Optional[Sequence[str]] = None,
        rate: Optional[Sequence[float]] = None,
        v3_style: bool = False,
) -> Tuple[Optional[Callable[..., nn.Module]], float]:
    """The attention layer for the builder's ``se_layer`` slot and its reduction ratio (of the channels it sees).

    Args:
        attn: One of ``ATTN_CHOICES``.
        pool_types: MRAP's statistics; only valid with ``attn='mrap'``.
        rate: MRAP's top-n shares; only valid with ``attn='mrap'``.
        v3_style: Use MobileNetV3's SE flavour (hard-sigmoid gate, ReLU, channels rounded to 8) for ``'se'``.

    Returns:
        The layer (None for ``'none'``) and its reduction ratio.
    """
    if attn not in ATTN_LAYERS:
        raise ValueError(
            f'Unknown attn {attn!r}; choose one of {", ".join(ATTN_CHOICES)} (e.g. --model-kwargs attn=cbam).')
    if attn != 'mrap' and (pool_types is not None or rate is not None):
        raise ValueError(f'pool_types and rate configure MRAP only; drop them or use attn="mrap" (got attn={attn!r}).')
    layer, rd_ratio = ATTN_LAYERS[attn]
    if attn == 'mrap':
        mrap_kwargs = {k: tuple(v) for k, v in (('pool_types', pool_types), ('rate', rate)) if v is not None}
        layer = partial(layer, **mrap_kwargs)
    elif attn == 'se' and v3_style:
        layer = partial(layer, gate_layer='hard_sigmoid', force_act_layer=nn.ReLU, rd_round_fn=round_channels)
    return layer, rd_ratio
