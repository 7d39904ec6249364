""" MobileNet V1 / V2 / V3-Large with MAFC after the projection conv (the MAF paper's MAFCV1 / V2 / V3; docs/mafc.md)

The backbones of ``mobilenet_mrap``; timm's blocks have no slot after the projection, so the marked blocks become the
``*AttnPost`` subclasses below once timm's builder has made them; the rest (``features_only``, FX, TorchScript,
pretrained loading) is timm's own.
"""
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models._efficientnet_builder import efficientnet_init_weights
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3, MobileNetV3Features

from ..layers import MAFC
from .mobilenet import create_mobilenet, gen_mobilenet, mobilenet_cfg
from .pretrained import explain_unpublished_weights

__all__ = [
    'DepthwiseSeparableConvAttnPost', 'InvertedResidualAttnPost', 'add_attn_post',
    'EfficientNetAttnPost', 'EfficientNetFeaturesAttnPost', 'MobileNetV3AttnPost', 'MobileNetV3FeaturesAttnPost',
]


class DepthwiseSeparableConvAttnPost(DepthwiseSeparableConv):
    """timm's depthwise-separable block with ``attn_post`` after the pointwise conv block (``bn2``), before the skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.aa(self.bn1(self.conv_dw(x))))
        out = self.attn_post(self.bn2(self.conv_pw(out)))
        return self.drop_path(out) + x if self.has_skip else out


class InvertedResidualAttnPost(InvertedResidual):
    """timm's inverted residual with ``attn_post`` after the projection conv block (``bn3``), before the skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.aa(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))
        out = self.attn_post(self.bn3(self.conv_pwl(self.se(out))))
        return self.drop_path(out) + x if self.has_skip else out


# timm's block -> (its subclass with attn_post, its last conv)
_ATTN_POST_BLOCKS = {
    DepthwiseSeparableConv: (DepthwiseSeparableConvAttnPost, 'conv_pw'),
    InvertedResidual: (InvertedResidualAttnPost, 'conv_pwl'),
}


def add_attn_post(block: nn.Module, attn_layer: Callable[..., nn.Module], device=None, dtype=None) -> nn.Module:
    """Give a block built by timm an attention on its output channels, after its last conv block and before the skip.

    The block becomes its ``*AttnPost`` subclass in place (parameters, names and feature hooks stay); the new
    ``attn_post`` gets timm's EfficientNet weight init, as an ``se`` layer would.

    Args:
        block: A ``DepthwiseSeparableConv`` or ``InvertedResidual`` (exact types, without space-to-depth).
        attn_layer: Attention factory, called as ``attn_layer(out_chs, device=..., dtype=...)``.
    """
    if type(block) not in _ATTN_POST_BLOCKS or block.conv_s2d is not None:
        raise TypeError(
            f'Cannot add an attention after the projection of a {type(block).__name__}; only DepthwiseSeparableConv '
            f'and InvertedResidual blocks (ds / dsa / ir in the block string, no space-to-depth) are supported.')
    post_cls, last_conv = _ATTN_POST_BLOCKS[type(block)]
    block.__class__ = post_cls
    block.attn_post = attn_layer(getattr(block, last_conv).out_channels, device=device, dtype=dtype)
    efficientnet_init_weights(block.attn_post)
    return block


class _AttnPostMixin:
    """Adds ``attn_post_layer`` to every block of the stages ``attn_post_stages`` once timm's builder has run."""

    def __init__(self, *args, attn_post_layer: Callable[..., nn.Module], attn_post_stages: Sequence[int], **kwargs):
        super().__init__(*args, **kwargs)
        for stage_idx in attn_post_stages:
            for block in self.blocks[stage_idx]:
                add_attn_post(block, attn_post_layer, device=kwargs.get('device'), dtype=kwargs.get('dtype'))


class EfficientNetAttnPost(_AttnPostMixin, EfficientNet):
    """timm's ``EfficientNet`` with an attention after the projection conv of the marked stages."""


class EfficientNetFeaturesAttnPost(_AttnPostMixin, EfficientNetFeatures):
    """timm's ``EfficientNetFeatures`` with an attention after the projection conv of the marked stages."""


class MobileNetV3AttnPost(_AttnPostMixin, MobileNetV3):
    """timm's ``MobileNetV3`` with an attention after the projection conv of the marked stages."""


class MobileNetV3FeaturesAttnPost(_AttnPostMixin, MobileNetV3Features):
    """timm's ``MobileNetV3Features`` with an attention after the projection conv of the marked stages."""


# model -> (its class, its features_only class, the stages whose blocks get MAFC after the projection)
_MAFC_MODELS = {
    'mobilenetv1_mafc': (EfficientNetAttnPost, EfficientNetFeaturesAttnPost, range(5)),  # every unit
    'mobilenetv2_mafc': (EfficientNetAttnPost, EfficientNetFeaturesAttnPost, range(7)),  # every bottleneck
    'mobilenetv3_mafc': (MobileNetV3AttnPost, MobileNetV3FeaturesAttnPost, (2, 4, 5)),  # V3-Large's 8 SE units
}


def _gen_mobilenet_mafc(variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """The MRAP models' backbone with no attention before the pointwise conv, and MAFC after the projection."""
    bad = sorted(k for k in ('attn', 'pool_types', 'rate') if k in kwargs)
    if bad:  # MRAP's options would silently mean something else here
        raise ValueError(
            f'{variant} has MAFC after the projection conv and takes no {", ".join(bad)}; for another attention on the '
            f'same backbone (before the pointwise conv) use {variant.replace("_mafc", "_mrap")} with attn=... '
            f'(e.g. attn="mafc").')
    model_cls, features_cls, stages = _MAFC_MODELS[variant]
    create_fn = partial(
        create_mobilenet, model_cls=model_cls, features_cls=features_cls, attn_post_stages=tuple(stages),
        attn_post_layer=partial(MAFC, force_act_layer=nn.ReLU))  # the reference's perceptron: ReLU in every block
    return gen_mobilenet(variant, pretrained, create_fn=create_fn, attn='none', **kwargs)


_mafc_cfg = partial(
    mobilenet_cfg, origin_url='https://github.com/nttbdrk25/MAFAttention',
    paper_name='Accumulating global channel-wise patterns via deformed-bottleneck recalibration for image '
               'classification')


# timm expands a bare org id to '<org>/<model>.<tag>' only for 'timm/', so the Hub ids are written out in full
default_cfgs = generate_default_cfgs({
    # the authors' released MobileNetV1 + MAFC (MAFCV1), converted; their logs: top-1 73.128, top-5 91.374.
    # Mean / std of a converted checkpoint come from its folded data_bn; the Hub config.json carries them.
    # The reference repository has no licence file, so the licence of these weights is not known.
    'mobilenetv1_mafc.in1k': _mafc_cfg(hf_hub_id='timm-mrap/mobilenetv1_mafc.in1k', license='unknown'),
    'mobilenetv1_mafc.rein100': _mafc_cfg(hf_hub_id='timm-mrap/mobilenetv1_mafc.rein100', num_classes=100),
    'mobilenetv2_mafc.rein100': _mafc_cfg(hf_hub_id='timm-mrap/mobilenetv2_mafc.rein100', num_classes=100),
    'mobilenetv3_mafc.rein100': _mafc_cfg(hf_hub_id='timm-mrap/mobilenetv3_mafc.rein100', num_classes=100),
})


@register_model
@explain_unpublished_weights
def mobilenetv1_mafc(pretrained: bool = False, **kwargs) -> EfficientNetAttnPost:
    """MobileNetV1 with MAFC after every pointwise conv block (MAFCV1), identity skips where shapes allow."""
    return _gen_mobilenet_mafc('mobilenetv1_mafc', pretrained, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv2_mafc(pretrained: bool = False, **kwargs) -> EfficientNetAttnPost:
    """MobileNetV2 with MAFC after the projection conv of all 17 bottlenecks (MAFCV2)."""
    return _gen_mobilenet_mafc('mobilenetv2_mafc', pretrained, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv3_mafc(pretrained: bool = False, **kwargs) -> MobileNetV3AttnPost:
    """MobileNetV3-Large with MAFC after the projection conv of its 8 SE units (MAFCV3); no SE."""
    return _gen_mobilenet_mafc('mobilenetv3_mafc', pretrained, **kwargs)
