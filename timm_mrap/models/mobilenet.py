""" The MobileNet V1 / V2 / V3 backbones of the MRAP and MAF papers, on timm's EfficientNet / MobileNetV3 builders

``gen_mobilenetv1`` / ``gen_mobilenetv2`` / ``gen_mobilenetv3`` build the reference topologies with any attention
(``attn``, see ``timm_mrap.layers.resolve_attn``) in timm's ``se`` slot: after the depthwise conv block and before the
pointwise / projection conv. Blocks that carry attention are the ones whose block string has an ``_se`` token; the
ratio written there is replaced by the chosen attention's own. The MRAP models (``mobilenet_mrap``) and the MAFC
models (``mobilenet_mafc``, which add their attention after the projection conv) are both built here.

The MRAP models are built by timm's own ``_create_effnet`` / ``_create_mnv3`` (``build_model_with_cfg`` with timm's
feature modes), so they are timm's ``EfficientNet`` / ``MobileNetV3`` classes; ``create_mobilenet`` is that builder
for other model classes (the MAFC models' ``*AttnPost`` subclasses).
"""
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from timm.models._builder import pretrained_cfg_for_features
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args
from timm.models.efficientnet import EfficientNet, _create_effnet
from timm.models.mobilenetv3 import MobileNetV3, _create_mnv3

from ..layers import resolve_attn
from ..layers.config import SWITCH_HINT

__all__ = ['create_mobilenet', 'gen_mobilenetv1', 'gen_mobilenetv2', 'gen_mobilenetv3', 'mobilenet_cfg']


def create_mobilenet(
        variant: str,
        pretrained: bool = False,
        *,
        model_cls: Type[nn.Module],
        features_cls: Type[nn.Module],
        features_kwargs_filter: Tuple[str, ...],
        **kwargs,
) -> nn.Module:
    """``build_model_with_cfg`` with timm's EfficientNet / MobileNetV3 feature modes, for any of their subclasses.

    timm's ``_create_effnet`` / ``_create_mnv3`` do the same for their own classes only.
    """
    features_mode = ''
    kwargs_filter = None
    if kwargs.pop('features_only', False):
        if 'feature_cfg' in kwargs or 'feature_cls' in kwargs:
            features_mode = 'cfg'  # timm wraps the full model (e.g. feature_cls='fx')
        else:
            features_mode = 'cls'
            model_cls = features_cls
            kwargs_filter = features_kwargs_filter
    pretrained_strict = kwargs.pop('pretrained_strict', True)
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        features_only=features_mode == 'cfg',
        pretrained_strict=pretrained_strict and features_mode != 'cls',
        kwargs_filter=kwargs_filter,
        **kwargs,
    )
    if features_mode == 'cls':
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return model


EFFICIENTNET_FEATURES_FILTER = ('num_classes', 'num_features', 'head_conv', 'global_pool')
MOBILENETV3_FEATURES_FILTER = ('num_classes', 'num_features', 'head_conv', 'head_bias', 'head_norm', 'global_pool')


def _build(
        variant: str,
        pretrained: bool,
        arch_def: List[List[str]],
        create_fn: Callable[..., nn.Module],
        default_act: str,
        se_from_exp: bool = False,
        v3_style: bool = False,
        skip_all: bool = False,
        model_args: Optional[Dict[str, Any]] = None,
        attn: str = 'mrap',
        pool_types: Optional[Sequence[str]] = None,
        rate: Optional[Sequence[float]] = None,
        **kwargs,
) -> nn.Module:
    """Decode ``arch_def``, put the chosen attention on every block whose string carries an ``_se`` token and build.

    The token only marks the block; its ratio is replaced by the attention's own, relative to the channels the
    attention sees. timm's ``EfficientNetBuilder`` divides the ratio by the expansion ratio unless ``se_from_exp`` is
    set, so it is pre-multiplied there. ``norm_layer`` / ``act_layer`` are resolved from ``kwargs`` as timm's own
    generators do.

    Args:
        skip_all: Give every block the identity skip where shapes allow (the reference V1; timm's ``dsa`` has none).
        model_args: The architecture's fixed arguments of the model class (``num_features``, ``stem_size``...).
        attn: One of ``ATTN_CHOICES`` (``timm_mrap.layers.resolve_attn``).
        pool_types: MRAP's statistics (``attn='mrap'`` only).
        rate: MRAP's top-n shares (``attn='mrap'`` only).
        **kwargs: timm's model arguments (``num_classes``, ``drop_rate``, ``norm_layer``, ``features_only``...).

    Raises:
        TypeError: ``mrap_impl=``: MRAP's implementation is a switch (``timm_mrap.layers.set_mrap_impl``).
    """
    if 'mrap_impl' in kwargs:
        raise TypeError(f'mrap_impl is not a model argument. {SWITCH_HINT}')
    se_layer, rd_ratio = resolve_attn(attn, pool_types, rate, v3_style=v3_style)
    block_args = decode_arch_def(arch_def)
    for stage in block_args:
        for ba in stage:
            if ba.get('se_ratio'):
                ba['se_ratio'] = rd_ratio if se_from_exp else rd_ratio * ba.get('exp_ratio', 1.0)
            if skip_all:
                ba['noskip'] = False
    return create_fn(
        variant,
        pretrained,
        block_args=block_args,
        se_layer=se_layer,
        norm_layer=kwargs.pop('norm_layer', None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, default_act),
        **(model_args or {}),
        **kwargs,
    )


def gen_mobilenetv1(
        variant: str,
        pretrained: bool = False,
        create_fn: Callable[..., nn.Module] = _create_effnet,
        **kwargs,
) -> EfficientNet:
    """MobileNetV1 of the reference: ReLU, attention in all 13 units, identity skip where shapes allow, no head.

    ``kwargs``: ``attn``, ``pool_types``, ``rate`` and timm's model arguments (see ``_build``).
    """
    arch_def = [
        ['dsa_r1_k3_s1_c64_se0.25'],
        ['dsa_r2_k3_s2_c128_se0.25'],
        ['dsa_r2_k3_s2_c256_se0.25'],
        ['dsa_r6_k3_s2_c512_se0.25'],
        ['dsa_r2_k3_s2_c1024_se0.25'],
    ]
    return _build(variant, pretrained, arch_def, create_fn, 'relu', skip_all=True,
                  model_args=dict(num_features=0, stem_size=32), **kwargs)


def gen_mobilenetv2(
        variant: str,
        pretrained: bool = False,
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
    return _build(variant, pretrained, arch_def, create_fn, 'relu6',
                  model_args=dict(num_features=1280, stem_size=32), **kwargs)


def gen_mobilenetv3(
        variant: str,
        pretrained: bool = False,
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
    return _build(variant, pretrained, arch_def, create_fn, 'hard_swish', se_from_exp=True, v3_style=True,
                  model_args=dict(num_features=num_features, stem_size=16, head_bias=False, se_from_exp=True),
                  **kwargs)


def mobilenet_cfg(url: str = '', **kwargs) -> Dict[str, Any]:
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
