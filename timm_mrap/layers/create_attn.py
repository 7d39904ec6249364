""" Attention by name: the layer a model puts in its ``se_layer`` slot, like timm's ``create_attn``

``ATTN_CHOICES`` names the attentions the registered models (``attn=...``), ``swap_attention`` and the comparison grid
take; ``resolve_attn`` turns a name into the layer and the reduction ratio (of the channels it sees) that goes with it.
"""
from functools import partial
from typing import Callable, Optional, Sequence, Tuple

from torch import nn

from timm.layers.cbam import CbamModule
from timm.layers.eca import EcaModule
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import round_channels

from .mafc import MAFC
from .mrap import MRAP

__all__ = ['ATTN_CHOICES', 'resolve_attn']

ATTN_CHOICES = ('mrap', 'mafc', 'se', 'eca', 'cbam', 'none')


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
    if attn not in ATTN_CHOICES:
        raise ValueError(f'Unknown attn {attn!r}; choose one of {ATTN_CHOICES} (e.g. --model-kwargs attn=cbam).')
    if attn != 'mrap' and (pool_types is not None or rate is not None):
        raise ValueError(f'pool_types and rate configure MRAP only; drop them or use attn="mrap" (got attn={attn!r}).')
    if attn == 'none':
        return None, 0.
    if attn == 'mrap':
        # the reference perceptron always uses ReLU, whatever the block's activation
        mrap_kwargs = {k: tuple(v) for k, v in (('pool_types', pool_types), ('rate', rate)) if v is not None}
        return partial(MRAP, force_act_layer=nn.ReLU, **mrap_kwargs), 1. / 16
    if attn == 'mafc':
        return partial(MAFC, force_act_layer=nn.ReLU), 1. / 16
    if attn == 'se':
        if v3_style:
            return partial(
                SqueezeExcite, gate_layer='hard_sigmoid', force_act_layer=nn.ReLU, rd_round_fn=round_channels), 0.25
        return SqueezeExcite, 0.25
    if attn == 'eca':
        return EcaModule, 1.  # ECA has no reduction; any non-zero ratio switches the block's slot on
    return CbamModule, 1. / 16
