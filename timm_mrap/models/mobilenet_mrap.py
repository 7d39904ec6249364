""" MobileNet V1 / V2 / V3 with MRAP: the registered ``*_mrap`` models (the MRAP paper's reference topology)

The ``attn`` model argument swaps the attention on the identical backbone for a same-recipe comparison (the choices:
``docs/attentions.md``); MRAP's implementation is a switch, not a model argument (``timm_mrap.layers.config``).
"""
from functools import partial

from timm.models import generate_default_cfgs, register_model
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3

from .mobilenet import gen_mobilenet, mobilenet_cfg as _cfg
from .pretrained import explain_unpublished_weights
from .warm_start import BACKBONE_TAG, backbone_cfg, checkpoint_filter_fn

__all__ = []


# one Hub repo per architecture and tag ('<org>/<architecture>.<tag>', spelled out: timm completes only 'timm/' ids);
# the tag names the training data, the first is the default; in1k_backbone tags: see warm_start
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


_gen_mobilenet_mrap = partial(gen_mobilenet, pretrained_filter_fn=checkpoint_filter_fn)


@register_model
@explain_unpublished_weights
def mobilenetv1_mrap(pretrained: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV1 with MRAP after every depthwise conv, identity skips where shapes allow (reference topology)."""
    return _gen_mobilenet_mrap('mobilenetv1_mrap', pretrained, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv2_mrap(pretrained: bool = False, **kwargs) -> EfficientNet:
    """MobileNetV2 with MRAP in all 17 bottlenecks (reference topology)."""
    return _gen_mobilenet_mrap('mobilenetv2_mrap', pretrained, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv3_mrap(pretrained: bool = False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Large with MRAP in place of SE (reference topology)."""
    return _gen_mobilenet_mrap('mobilenetv3_mrap', pretrained, **kwargs)


@register_model
@explain_unpublished_weights
def mobilenetv3_small_mrap(pretrained: bool = False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Small with MRAP in place of SE, built as mobilenetv3_mrap (its first unit has a 1x1 expansion)."""
    return _gen_mobilenet_mrap('mobilenetv3_small_mrap', pretrained, **kwargs)
