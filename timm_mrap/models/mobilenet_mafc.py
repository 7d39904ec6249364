""" MobileNet V1 / V2 / V3-Large with MAFC after the projection conv (the MAF paper's MAFCV1 / V2 / V3)

Paper: `Accumulating global channel-wise patterns via deformed-bottleneck recalibration for image classification`
    Pattern Analysis and Applications 28 (2025). Reference code: https://github.com/nttbdrk25/MAFAttention

The backbones are exactly those of ``mobilenet_mrap`` (same block strings, built by the same ``gen_mobilenetv*``
functions of ``timm_mrap.models.mobilenet``); only the attention moves. MAFC sits **after the pointwise / projection
conv block, on the block's output channels, before the residual add**: in every MobileNetV1 unit (with the MRAP
models' extra identity skips), in every MobileNetV2 bottleneck and in the 8 SE units of MobileNetV3-Large. MRAP (and
``attn='mafc'`` on the ``*_mrap`` models) sits before the pointwise conv instead, in timm's ``se`` slot.

timm's blocks have no slot after their last conv, so the marked blocks are turned into the small subclasses below
(``attn_post`` applied after ``bn2`` / ``bn3``, before the skip), and the model classes are thin subclasses of timm's
that do this right after timm's builder has made the blocks (built by ``timm_mrap.models.mobilenet.create_mobilenet``,
since timm's ``_create_effnet`` / ``_create_mnv3`` build their own classes only). Everything else
(builder, ``features_only``, FX feature extraction, TorchScript, pretrained loading) is timm's own.
"""
from functools import partial
from typing import Any, Callable, Dict, Sequence, Tuple, Type

import torch
from torch import nn

from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models._efficientnet_builder import efficientnet_init_weights

from ..layers import MAFC
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3, MobileNetV3Features

from .mobilenet import EFFICIENTNET_FEATURES_FILTER, MOBILENETV3_FEATURES_FILTER, create_mobilenet, gen_mobilenetv1, \
    gen_mobilenetv2, gen_mobilenetv3, mobilenet_cfg
from .pretrained import explain_unpublished_weights

__all__ = [
    'DepthwiseSeparableConvAttnPost', 'InvertedResidualAttnPost', 'add_attn_post',
    'EfficientNetAttnPost', 'EfficientNetFeaturesAttnPost', 'MobileNetV3AttnPost', 'MobileNetV3FeaturesAttnPost',
]


class DepthwiseSeparableConvAttnPost(DepthwiseSeparableConv):
    """timm's depthwise-separable block with ``attn_post`` after the pointwise conv block (``bn2``), before the skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_s2d is not None:
            x = self.conv_s2d(x)
            x = self.bn_s2d(x)
        x = self.conv_dw(x)
        x = self.bn1(x)
        x = self.aa(x)
        x = self.se(x)
        x = self.conv_pw(x)
        x = self.bn2(x)
        x = self.attn_post(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class InvertedResidualAttnPost(InvertedResidual):
    """timm's inverted residual with ``attn_post`` after the projection conv block (``bn3``), before the skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_s2d is not None:
            x = self.conv_s2d(x)
            x = self.bn_s2d(x)
        x = self.conv_pw(x)
        x = self.bn1(x)
        x = self.conv_dw(x)
        x = self.bn2(x)
        x = self.aa(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        x = self.bn3(x)
        x = self.attn_post(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


_ATTN_POST_BLOCKS: Dict[Type[nn.Module], Tuple[Type[nn.Module], str]] = {
    DepthwiseSeparableConv: (DepthwiseSeparableConvAttnPost, 'conv_pw'),
    InvertedResidual: (InvertedResidualAttnPost, 'conv_pwl'),
}


def add_attn_post(block: nn.Module, attn_layer: Callable[..., nn.Module], device=None, dtype=None) -> nn.Module:
    """Give a block built by timm an attention on its output channels, after its last conv block and before the skip.

    The block becomes its ``*AttnPost`` subclass in place, so its parameters, names and any feature hooks stay as
    they are; the new ``attn_post`` module gets timm's EfficientNet weight init, like an ``se`` layer would.

    Args:
        block: A ``DepthwiseSeparableConv`` or ``InvertedResidual`` (exact types; CondConv and others are not covered).
        attn_layer: Attention factory, called as ``attn_layer(out_chs, device=..., dtype=...)``.
    """
    if type(block) not in _ATTN_POST_BLOCKS:
        raise TypeError(
            f'Cannot add an attention after the projection of a {type(block).__name__}; only DepthwiseSeparableConv '
            f'and InvertedResidual blocks (ds / dsa / ir in the block string) are supported.')
    post_cls, last_conv = _ATTN_POST_BLOCKS[type(block)]
    block.__class__ = post_cls
    block.attn_post = attn_layer(getattr(block, last_conv).out_channels, device=device, dtype=dtype)
    efficientnet_init_weights(block.attn_post)
    return block


class _AttnPostMixin:
    """Adds ``attn_post_layer`` to every block of the stages ``attn_post_stages`` once timm's builder has run."""

    def __init__(
            self,
            *args,
            attn_post_layer: Callable[..., nn.Module],
            attn_post_stages: Sequence[int],
            **kwargs,
    ):
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


# the MAF reference perceptron uses ReLU whatever the block's activation; reduction 16 of the output channels
_MAFC_POST = partial(MAFC, force_act_layer=nn.ReLU)

_create_effnet_attn_post = partial(
    create_mobilenet,
    model_cls=EfficientNetAttnPost,
    features_cls=EfficientNetFeaturesAttnPost,
    features_kwargs_filter=EFFICIENTNET_FEATURES_FILTER,
)
_create_mnv3_attn_post = partial(
    create_mobilenet,
    model_cls=MobileNetV3AttnPost,
    features_cls=MobileNetV3FeaturesAttnPost,
    features_kwargs_filter=MOBILENETV3_FEATURES_FILTER,
)


def _check_mafc_kwargs(variant: str, kwargs: Dict[str, Any]) -> None:
    """The MAFC models fix their attention; MRAP's options would silently mean something else here."""
    bad = sorted(k for k in ('attn', 'pool_types', 'rate') if k in kwargs)
    if bad:
        mrap_variant = variant.replace('_mafc', '_mrap')
        raise ValueError(
            f'{variant} has MAFC after the projection conv and takes no {", ".join(bad)}; for another attention on the '
            f'same backbone (before the pointwise conv) use {mrap_variant} with attn=... (e.g. attn="mafc").')


def _gen_mobilenet_mafc(
        gen_fn: Callable[..., nn.Module],
        create_fn: Callable[..., nn.Module],
        attn_post_stages: Sequence[int],
        variant: str,
        pretrained: bool = False,
        **kwargs,
) -> nn.Module:
    """The MRAP models' backbone without attention before the pointwise conv, and MAFC after the projection."""
    _check_mafc_kwargs(variant, kwargs)
    return gen_fn(
        variant,
        pretrained=pretrained,
        attn='none',
        create_fn=partial(create_fn, attn_post_layer=_MAFC_POST, attn_post_stages=tuple(attn_post_stages)),
        **kwargs,
    )


def _mafc_cfg(**kwargs) -> Dict[str, Any]:
    return mobilenet_cfg(
        paper_name='Accumulating global channel-wise patterns via deformed-bottleneck recalibration '
                   'for image classification',
        origin_url='https://github.com/nttbdrk25/MAFAttention',
        **kwargs,
    )


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
    return _gen_mobilenet_mafc(
        gen_mobilenetv1, _create_effnet_attn_post, range(5), 'mobilenetv1_mafc', pretrained, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv2_mafc(pretrained: bool = False, **kwargs) -> EfficientNetAttnPost:
    """MobileNetV2 with MAFC after the projection conv of all 17 bottlenecks (MAFCV2)."""
    return _gen_mobilenet_mafc(
        gen_mobilenetv2, _create_effnet_attn_post, range(7), 'mobilenetv2_mafc', pretrained, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv3_mafc(pretrained: bool = False, **kwargs) -> MobileNetV3AttnPost:
    """MobileNetV3-Large with MAFC after the projection conv of its 8 SE units (MAFCV3); no SE."""
    return _gen_mobilenet_mafc(
        gen_mobilenetv3, _create_mnv3_attn_post, (2, 4, 5), 'mobilenetv3_mafc', pretrained, **kwargs)
