""" MobileNet V1 / V2 / V3-Large with MRAP, on timm's EfficientNet / MobileNetV3 builders

The reference topology of the MRAP paper (see the module docstring of ``timm_mrap.layers.mrap``): the attention sits
after the depthwise conv block and before the pointwise / projection conv, which is where timm's
``DepthwiseSeparableConv`` and ``InvertedResidual`` apply their ``se`` layer. Blocks that carry attention are the
ones whose block string has an ``_se`` token; the ratio written there is replaced by the chosen attention's own.

The ``attn`` model argument swaps the attention on the identical backbone for a same-recipe comparison:
``'mrap'`` (default), ``'none'``, ``'se'``, ``'eca'``, ``'cbam'`` and ``'mafc'``. ``mrap_impl`` picks MRAP's
implementation for every MRAP in the network (see ``timm_mrap.layers.config``).
"""
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers.cbam import CbamModule
from timm.layers.eca import EcaModule
from timm.models import register_model, generate_default_cfgs
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels
from timm.models.efficientnet import EfficientNet, _create_effnet
from timm.models.mobilenetv3 import MobileNetV3, _create_mnv3

from ..hub.pretrained import explain_unpublished_weights
from ..layers import MAFC, MRAP
from ..layers.config import check_mrap_impl, get_mrap_impl
from .timm_backbones import BACKBONE_TAG, backbone_cfg, checkpoint_filter_fn

__all__ = ['ATTN_CHOICES', 'resolve_attn']

ATTN_CHOICES = ('mrap', 'mafc', 'se', 'eca', 'cbam', 'none')


def resolve_attn(
        attn: str = 'mrap',
        pool_types: Optional[Sequence[str]] = None,
        rate: Optional[Sequence[float]] = None,
        v3_style: bool = False,
        mrap_impl: Optional[str] = None,
) -> Tuple[Optional[Callable[..., nn.Module]], float]:
    """The attention layer for the builder's ``se_layer`` slot and its reduction ratio (of the channels it sees).

    Args:
        attn: One of ``ATTN_CHOICES``.
        pool_types: MRAP's statistics; only valid with ``attn='mrap'``.
        rate: MRAP's top-n shares; only valid with ``attn='mrap'``.
        v3_style: Use MobileNetV3's SE flavour (hard-sigmoid gate, ReLU, channels rounded to 8) for ``'se'``.
        mrap_impl: MRAP's implementation (``'auto'``, ``'reference'``, ``'fused'``, ``'triton'``); None takes
            ``timm_mrap.layers.get_mrap_impl()``. Ignored by the other attentions.
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
        return partial(MRAP, force_act_layer=nn.ReLU, impl=check_mrap_impl(mrap_impl or get_mrap_impl()),
                       **mrap_kwargs), 1. / 16
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


def _decode_with_attn(
        arch_def: List[List[str]],
        attn: str,
        pool_types: Optional[Sequence[str]],
        rate: Optional[Sequence[float]],
        se_from_exp: bool,
        v3_style: bool = False,
        mrap_impl: Optional[str] = None,
) -> Tuple[List[List[Dict[str, Any]]], Optional[Callable[..., nn.Module]]]:
    """Decode ``arch_def`` and put the chosen attention on every block whose string carries an ``_se`` token.

    The token only marks the block; its ratio is replaced by the attention's own, relative to the channels the
    attention sees. timm's ``EfficientNetBuilder`` divides the ratio by the expansion ratio unless ``se_from_exp`` is
    set, so it is pre-multiplied there.

    Returns:
        The decoded block arguments and the layer for the builder's ``se_layer``.
    """
    se_layer, rd_ratio = resolve_attn(attn, pool_types, rate, v3_style=v3_style, mrap_impl=mrap_impl)
    block_args = decode_arch_def(arch_def)
    for stage in block_args:
        for ba in stage:
            if ba.get('se_ratio'):
                ba['se_ratio'] = rd_ratio if se_from_exp else rd_ratio * ba.get('exp_ratio', 1.0)
    return block_args, se_layer


def _gen_mobilenetv1_mrap(
        variant: str,
        pretrained: bool = False,
        attn: str = 'mrap',
        pool_types: Optional[Sequence[str]] = None,
        rate: Optional[Sequence[float]] = None,
        mrap_impl: Optional[str] = None,
        create_fn: Callable[..., nn.Module] = _create_effnet,
        **kwargs,
) -> EfficientNet:
    """MobileNetV1 of the reference: ReLU, attention in all 13 units, identity skip where shapes allow, no head."""
    arch_def = [
        ['dsa_r1_k3_s1_c64_se0.25'],
        ['dsa_r2_k3_s2_c128_se0.25'],
        ['dsa_r2_k3_s2_c256_se0.25'],
        ['dsa_r6_k3_s2_c512_se0.25'],
        ['dsa_r2_k3_s2_c1024_se0.25'],
    ]
    block_args, se_layer = _decode_with_attn(arch_def, attn, pool_types, rate, se_from_exp=False, mrap_impl=mrap_impl)
    for stage in block_args:
        for ba in stage:
            ba['noskip'] = False  # 'dsa' disables the skip; the reference adds one when in == out and stride 1
    model_kwargs = dict(
        block_args=block_args,
        num_features=0,
        stem_size=32,
        se_layer=se_layer,
        norm_layer=kwargs.pop('norm_layer', None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'relu'),
        **kwargs,
    )
    return create_fn(variant, pretrained, **model_kwargs)


def _gen_mobilenetv2_mrap(
        variant: str,
        pretrained: bool = False,
        attn: str = 'mrap',
        pool_types: Optional[Sequence[str]] = None,
        rate: Optional[Sequence[float]] = None,
        mrap_impl: Optional[str] = None,
        create_fn: Callable[..., nn.Module] = _create_effnet,
        **kwargs,
) -> EfficientNet:
    """MobileNetV2 of the reference: attention in all 17 bottlenecks; the first has a 1x1 expansion (e1)."""
    arch_def = [
        ['ir_r1_k3_s1_e1_c16_se0.25'],
        ['ir_r2_k3_s2_e6_c24_se0.25'],
        ['ir_r3_k3_s2_e6_c32_se0.25'],
        ['ir_r4_k3_s2_e6_c64_se0.25'],
        ['ir_r3_k3_s1_e6_c96_se0.25'],
        ['ir_r3_k3_s2_e6_c160_se0.25'],
        ['ir_r1_k3_s1_e6_c320_se0.25'],
    ]
    block_args, se_layer = _decode_with_attn(arch_def, attn, pool_types, rate, se_from_exp=False, mrap_impl=mrap_impl)
    model_kwargs = dict(
        block_args=block_args,
        num_features=1280,
        stem_size=32,
        se_layer=se_layer,
        norm_layer=kwargs.pop('norm_layer', None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'relu6'),
        **kwargs,
    )
    return create_fn(variant, pretrained, **model_kwargs)


def _gen_mobilenetv3_mrap(
        variant: str,
        pretrained: bool = False,
        attn: str = 'mrap',
        pool_types: Optional[Sequence[str]] = None,
        rate: Optional[Sequence[float]] = None,
        mrap_impl: Optional[str] = None,
        create_fn: Callable[..., nn.Module] = _create_mnv3,
        **kwargs,
) -> MobileNetV3:
    """MobileNetV3 with attention in place of SE; the first unit is an inverted residual with a 1x1 expansion (e1).

    Large (the reference): attention in its 8 SE units. Small (``'small'`` in ``variant``; the reference's small
    variant does not run): attention in its 9 SE units, built the same way as Large.
    """
    if 'small' in variant:
        num_features = 1024
        arch_def = [
            ['ir_r1_k3_s2_e1_c16_se0.25_nre'],  # relu
            ['ir_r1_k3_s2_e4.5_c24_nre', 'ir_r1_k3_s1_e3.67_c24_nre'],  # relu
            ['ir_r1_k5_s2_e4_c40_se0.25', 'ir_r2_k5_s1_e6_c40_se0.25'],  # hard-swish
            ['ir_r2_k5_s1_e3_c48_se0.25'],  # hard-swish
            ['ir_r3_k5_s2_e6_c96_se0.25'],  # hard-swish
            ['cn_r1_k1_s1_c576'],  # hard-swish
        ]
    else:
        num_features = 1280
        arch_def = [
            ['ir_r1_k3_s1_e1_c16_nre'],  # relu
            ['ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'],  # relu
            ['ir_r3_k5_s2_e3_c40_se0.25_nre'],  # relu
            ['ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'],  # hard-swish
            ['ir_r2_k3_s1_e6_c112_se0.25'],  # hard-swish
            ['ir_r3_k5_s2_e6_c160_se0.25'],  # hard-swish
            ['cn_r1_k1_s1_c960'],  # hard-swish
        ]
    block_args, se_layer = _decode_with_attn(
        arch_def, attn, pool_types, rate, se_from_exp=True, v3_style=True, mrap_impl=mrap_impl)
    model_kwargs = dict(
        block_args=block_args,
        num_features=num_features,
        stem_size=16,
        head_bias=False,
        se_from_exp=True,
        se_layer=se_layer,
        norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'hard_swish'),
        **kwargs,
    )
    return create_fn(variant, pretrained, **model_kwargs)


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 0.875,
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv_stem',
        'classifier': 'classifier',
        'license': 'apache-2.0',
        'paper_name': 'Multiple channel-spatial residual attentive patterns for lightweight networks '
                      'in image classification',
        'origin_url': 'https://github.com/nttbdrk25/MRAP',
        **kwargs,
    }


# Hub weights: one repo per architecture and tag, named '<org>/<architecture>.<tag>' as timm names its own (timm
# completes only 'timm/' ids, so ours are spelled out). The tag names the training data; the first tag is the default.
# The in1k_backbone tags (never the default) load timm's ImageNet-1k weights of the plain backbone, with attention
# untrained, for fine-tuning (see timm_backbones).
default_cfgs = generate_default_cfgs({
    'mobilenetv1_mrap.rein100': _cfg(hf_hub_id='timm-mrap/mobilenetv1_mrap.rein100', num_classes=100),
    f'mobilenetv1_mrap.{BACKBONE_TAG}': backbone_cfg('mobilenetv1_mrap', _cfg),
    'mobilenetv2_mrap.rein100': _cfg(hf_hub_id='timm-mrap/mobilenetv2_mrap.rein100', num_classes=100),
    f'mobilenetv2_mrap.{BACKBONE_TAG}': backbone_cfg('mobilenetv2_mrap', _cfg),
    'mobilenetv3_mrap.rein100': _cfg(hf_hub_id='timm-mrap/mobilenetv3_mrap.rein100', num_classes=100),
    f'mobilenetv3_mrap.{BACKBONE_TAG}': backbone_cfg('mobilenetv3_mrap', _cfg),
    'mobilenetv3_small_mrap.rein100': _cfg(hf_hub_id='timm-mrap/mobilenetv3_small_mrap.rein100', num_classes=100),
    f'mobilenetv3_small_mrap.{BACKBONE_TAG}': backbone_cfg('mobilenetv3_small_mrap', _cfg),
})


@register_model
@explain_unpublished_weights
def mobilenetv1_mrap(pretrained: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV1 with MRAP after every depthwise conv (reference topology)."""
    return _gen_mobilenetv1_mrap(
        'mobilenetv1_mrap', pretrained=pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv2_mrap(pretrained: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV2 with MRAP in all 17 bottlenecks (reference topology)."""
    return _gen_mobilenetv2_mrap(
        'mobilenetv2_mrap', pretrained=pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv3_mrap(pretrained: bool = False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Large with MRAP in place of SE (reference topology)."""
    return _gen_mobilenetv3_mrap(
        'mobilenetv3_mrap', pretrained=pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv3_small_mrap(pretrained: bool = False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Small with MRAP in place of SE, built as mobilenetv3_mrap (its first unit has a 1x1 expansion)."""
    return _gen_mobilenetv3_mrap(
        'mobilenetv3_small_mrap', pretrained=pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)
