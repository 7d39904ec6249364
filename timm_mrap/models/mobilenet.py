""" The MobileNet V1 / V2 / V3 backbones of the MRAP and MAF papers, on timm's EfficientNet / MobileNetV3 builders

``MOBILENETS`` holds each reference topology as data; ``gen_mobilenet`` builds one with any attention in timm's ``se``
slot (after the depthwise conv) of every block whose string has an ``_se`` token (``docs/conversion.md``).
"""
from functools import partial
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Type

from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from timm.models._builder import pretrained_cfg_for_features
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args
from timm.models.efficientnet import EfficientNet, _create_effnet
from timm.models.mobilenetv3 import MobileNetV3, _create_mnv3

from ..layers import resolve_attn
from ..layers.config import SWITCH_HINT

__all__ = ['MOBILENETS', 'MobileNetArch', 'create_mobilenet', 'gen_mobilenet', 'mobilenet_cfg']


class MobileNetArch(NamedTuple):
    """A reference topology: timm block strings (``_se`` marks the blocks with attention) and the model settings."""
    arch_def: List[List[str]]
    act_layer: str
    model_args: Dict[str, Any]  # fixed arguments of the model class
    model_cls: Type[nn.Module] = EfficientNet  # or MobileNetV3: its SE flavour, ratios of the expanded channels
    skip_all: bool = False  # the identity skip wherever shapes allow (the reference V1; timm's ``dsa`` has none)


_V3_ARGS = dict(stem_size=16, head_bias=False, se_from_exp=True)

# architecture (the model name before its last '_') -> topology; e1: the first unit has a 1x1 expansion
MOBILENETS = {
    # ReLU, attention in all 13 units, no head
    'mobilenetv1': MobileNetArch([
        ['dsa_r1_k3_s1_c64_se0.25'],
        ['dsa_r2_k3_s2_c128_se0.25'],
        ['dsa_r2_k3_s2_c256_se0.25'],
        ['dsa_r6_k3_s2_c512_se0.25'],
        ['dsa_r2_k3_s2_c1024_se0.25'],
    ], 'relu', dict(num_features=0, stem_size=32), skip_all=True),
    # attention in all 17 bottlenecks
    'mobilenetv2': MobileNetArch([
        ['ir_r1_k3_s1_e1_c16_se0.25'],
        ['ir_r2_k3_s2_e6_c24_se0.25'],
        ['ir_r3_k3_s2_e6_c32_se0.25'],
        ['ir_r4_k3_s2_e6_c64_se0.25'],
        ['ir_r3_k3_s1_e6_c96_se0.25'],
        ['ir_r3_k3_s2_e6_c160_se0.25'],
        ['ir_r1_k3_s1_e6_c320_se0.25'],
    ], 'relu6', dict(num_features=1280, stem_size=32)),
    # attention in place of its 8 SE units; _nre: ReLU, else hard-swish
    'mobilenetv3': MobileNetArch([
        ['ir_r1_k3_s1_e1_c16_nre'],
        ['ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'],
        ['ir_r3_k5_s2_e3_c40_se0.25_nre'],
        ['ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'],
        ['ir_r2_k3_s1_e6_c112_se0.25'],
        ['ir_r3_k5_s2_e6_c160_se0.25'],
        ['cn_r1_k1_s1_c960'],
    ], 'hard_swish', dict(num_features=1280, **_V3_ARGS), MobileNetV3),
    # attention in its 9 SE units, built as Large (the reference's small variant does not run)
    'mobilenetv3_small': MobileNetArch([
        ['ir_r1_k3_s2_e1_c16_se0.25_nre'],
        ['ir_r1_k3_s2_e4.5_c24_nre', 'ir_r1_k3_s1_e3.67_c24_nre'],
        ['ir_r1_k5_s2_e4_c40_se0.25', 'ir_r2_k5_s1_e6_c40_se0.25'],
        ['ir_r2_k5_s1_e3_c48_se0.25'],
        ['ir_r3_k5_s2_e6_c96_se0.25'],
        ['cn_r1_k1_s1_c576'],
    ], 'hard_swish', dict(num_features=1024, **_V3_ARGS), MobileNetV3),
}
_TIMM_CREATE = {EfficientNet: _create_effnet, MobileNetV3: _create_mnv3}
# timm's _create_effnet / _create_mnv3 drop these for their features_only classes (the union of both lists)
_FEATURES_KWARGS_FILTER = ('num_classes', 'num_features', 'head_conv', 'head_bias', 'head_norm', 'global_pool')


def create_mobilenet(variant: str, pretrained: bool = False, *, model_cls: Type[nn.Module],
                     features_cls: Type[nn.Module], **kwargs) -> nn.Module:
    """timm's ``_create_effnet`` / ``_create_mnv3`` (``build_model_with_cfg`` with their feature modes), which build
    their own classes only, for ``model_cls`` and its ``features_only`` twin ``features_cls``."""
    features_mode = ''
    if kwargs.pop('features_only', False):
        features_mode = 'cfg' if 'feature_cfg' in kwargs or 'feature_cls' in kwargs else 'cls'
    model = build_model_with_cfg(
        features_cls if features_mode == 'cls' else model_cls,
        variant,
        pretrained,
        features_only=features_mode == 'cfg',  # timm wraps the full model (e.g. feature_cls='fx')
        pretrained_strict=kwargs.pop('pretrained_strict', True) and features_mode != 'cls',
        kwargs_filter=_FEATURES_KWARGS_FILTER if features_mode == 'cls' else None,
        **kwargs,
    )
    if features_mode == 'cls':
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return model


def gen_mobilenet(variant: str, pretrained: bool = False, create_fn: Optional[Callable[..., nn.Module]] = None,
                  attn: str = 'mrap', pool_types: Optional[Sequence[str]] = None,
                  rate: Optional[Sequence[float]] = None, **kwargs) -> nn.Module:
    """Build the ``MOBILENETS`` topology of ``variant`` (``mobilenetv2_mrap``: ``mobilenetv2``) with ``attn``.

    The ``_se`` token only marks a block; its ratio is replaced by the attention's own, relative to the channels the
    attention sees (timm's builder divides it by the expansion ratio unless ``se_from_exp``, so it is pre-multiplied).

    Args:
        create_fn: Builds the model (default: timm's ``_create_effnet`` / ``_create_mnv3``).
        attn: One of ``ATTN_CHOICES``; ``pool_types`` / ``rate``: MRAP's statistics and top-n shares.
        **kwargs: timm's model arguments (``num_classes``, ``drop_rate``, ``norm_layer``, ``features_only``...).

    Raises:
        TypeError: ``mrap_impl=``: MRAP's implementation is a switch (``timm_mrap.layers.set_mrap_impl``).
    """
    if 'mrap_impl' in kwargs:
        raise TypeError(f'mrap_impl is not a model argument. {SWITCH_HINT}')
    arch = MOBILENETS[variant.rsplit('_', 1)[0]]
    from_exp = arch.model_args.get('se_from_exp', False)
    se_layer, rd_ratio = resolve_attn(attn, pool_types, rate, v3_style=arch.model_cls is MobileNetV3)
    block_args = decode_arch_def(arch.arch_def)
    for ba in (ba for stage in block_args for ba in stage):
        if ba.get('se_ratio'):
            ba['se_ratio'] = rd_ratio if from_exp else rd_ratio * ba.get('exp_ratio', 1.0)
        if arch.skip_all:
            ba['noskip'] = False
    return (create_fn or _TIMM_CREATE[arch.model_cls])(
        variant,
        pretrained,
        block_args=block_args,
        se_layer=se_layer,
        norm_layer=kwargs.pop('norm_layer', None) or partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, arch.act_layer),
        **arch.model_args,
        **kwargs,
    )


def mobilenet_cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': 0.875,
        'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv_stem', 'classifier': 'classifier', 'license': 'apache-2.0',
        'paper_name': 'Multiple channel-spatial residual attentive patterns for lightweight networks in image '
                      'classification',
        'origin_url': 'https://github.com/nttbdrk25/MRAP', **kwargs,
    }
