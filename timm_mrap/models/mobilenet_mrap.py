""" MobileNet V1 / V2 / V3 with MRAP: the registered ``*_mrap`` models

The reference topology of the MRAP paper: the attention sits after the depthwise conv block and before the pointwise /
projection conv, in timm's ``se`` slot (built by ``timm_mrap.models.mobilenet``). The ``attn`` model argument swaps
the attention on the identical backbone for a same-recipe comparison (the choices: ``timm_mrap.layers.create_attn``,
``docs/attentions.md``). MRAP's implementation is a switch, not a model argument (``timm_mrap.layers.config``).
"""
from timm.models import generate_default_cfgs, register_model
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3

from .mobilenet import gen_mobilenet, mobilenet_cfg as _cfg
from .pretrained import explain_unpublished_weights
from .warm_start import BACKBONE_TAG, backbone_cfg, checkpoint_filter_fn

__all__ = []


# Hub weights: one repo per architecture and tag, named '<org>/<architecture>.<tag>' as timm names its own (timm
# completes only 'timm/' ids, so ours are spelled out). The tag names the training data; the first tag is the default.
# The in1k_backbone tags (never the default) load timm's ImageNet-1k weights of the plain backbone, with attention
# untrained, for fine-tuning (see warm_start).
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


def _gen_mobilenet_mrap(variant: str, pretrained: bool = False, **kwargs):
    return gen_mobilenet(variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


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
