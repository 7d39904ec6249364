""" Warm starts from timm's own ImageNet-1k weights: the ``<architecture>.in1k_backbone`` tags

They load timm's weights of the matching plain backbone (``TIMM_BACKBONES``) with attention untrained, for fine-tuning;
what is copied, dropped and set to an identity: ``docs/beyond_the_paper.md``. Our own state dicts pass unchanged.
"""
from typing import Any, Callable, Dict, List

import torch
from torch import nn

from timm.models import get_pretrained_cfg

__all__ = ['BACKBONE_TAG', 'TIMM_BACKBONES', 'backbone_cfg', 'checkpoint_filter_fn', 'is_timm_layout']

BACKBONE_TAG = 'in1k_backbone'

# our architecture -> timm's pretrained model (architecture.tag) whose weights the in1k_backbone tag loads
TIMM_BACKBONES = {
    'mobilenetv1_mrap': 'mobilenetv1_100.ra4_e3600_r224_in1k',
    'mobilenetv2_mrap': 'mobilenetv2_100.ra_in1k',
    'mobilenetv3_mrap': 'mobilenetv3_large_100.ra_in1k',
    'mobilenetv3_small_mrap': 'mobilenetv3_small_100.lamb_in1k',
}

_ATTN = '.se.'
# timm's depthwise-separable first block -> our inverted residual of expansion 1
_FIRST = 'blocks.0.0.'
_FIRST_BLOCK = {'conv_dw': 'conv_dw', 'bn1': 'bn2', 'conv_pw': 'conv_pwl', 'bn2': 'bn3'}


def backbone_cfg(architecture: str, make_cfg: Callable[..., Dict[str, Any]]) -> Dict[str, Any]:
    """The pretrained cfg of ``architecture.in1k_backbone`` (made by ``make_cfg``): timm's Hub repo and the data
    config of the weights there."""
    source = TIMM_BACKBONES[architecture]
    src = get_pretrained_cfg(source)
    return make_cfg(
        hf_hub_id=f'timm/{source}', num_classes=1000, input_size=src.input_size, crop_pct=src.crop_pct,
        test_input_size=src.test_input_size, test_crop_pct=src.test_crop_pct, interpolation=src.interpolation,
        mean=src.mean, std=src.std, license=src.license or 'apache-2.0',
        notes=(f"timm's ImageNet-1k weights of {source} with untrained attention, for fine-tuning; "
               "not the MRAP paper's weights",),
    )


def _has_ds_first_block(model: nn.Module) -> bool:
    """Whether our model's first block is the inverted residual that replaces timm's ``ds`` block (V2 / V3)."""
    return hasattr(model.blocks[0][0], 'conv_pwl')


def is_timm_layout(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> bool:
    """Whether ``state_dict`` is a timm MobileNet's (to be mapped) rather than one of ours (loaded as it is)."""
    if _has_ds_first_block(model):
        return 'blocks.0.0.conv_pwl.weight' not in state_dict
    return not any(_ATTN in k for k in state_dict)  # V1: same keys as timm's, ours add attention


def _rename(key: str) -> str:
    if key.startswith(_FIRST):
        module, _, rest = key[len(_FIRST):].partition('.')
        return _FIRST + _FIRST_BLOCK[module] + '.' + rest
    return key


def _identity_expansion(out: Dict[str, torch.Tensor], eps: float) -> List[str]:
    """Set our first block's extra 1x1 conv + BN (``eps``) to an exact identity; returns the keys it set."""
    conv, bn = _FIRST + 'conv_pw.weight', _FIRST + 'bn1.'
    weight, like = out[conv], out[bn + 'weight']
    values = {
        conv: torch.eye(weight.shape[0], dtype=weight.dtype).reshape(weight.shape),
        bn + 'weight': torch.ones_like(like), bn + 'bias': torch.zeros_like(like),
        bn + 'running_mean': torch.zeros_like(like),
        bn + 'running_var': torch.full_like(like, 1. - eps),  # 1 / sqrt(var + eps) rounds to exactly 1
    }
    out.update(values)
    return list(values)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map timm's MobileNet weights onto ``model``; attention keeps its initialisation (see the module docstring).

    Raises:
        ValueError: A timm-layout tensor with no place or the wrong shape in ``model``, or a backbone tensor of
            ``model`` that the weights do not fill (the weights are of another architecture).
    """
    if not is_timm_layout(state_dict, model):
        return state_dict
    target = model.state_dict()
    has_head = hasattr(model, 'classifier')  # a features_only model has no head: head tensors are skipped
    first_block = _has_ds_first_block(model)
    out = dict(target)  # attention (and whatever is new) at the model's initialisation
    copied, no_place, bad_shape = set(), [], []
    for key, value in state_dict.items():
        if _ATTN in key:
            continue  # timm's SE (MobileNetV3): attention starts untrained
        ours = _rename(key) if first_block else key
        if ours not in target:
            if key == 'conv_head.bias' or not has_head:
                continue  # our V3 head conv has no bias
            no_place.append(key)
            continue
        if not ours.startswith('classifier.') and value.shape != target[ours].shape:
            bad_shape.append(f'{key} {tuple(value.shape)} -> {ours} {tuple(target[ours].shape)}')
        out[ours] = value
        copied.add(ours)
    new = set(_identity_expansion(out, model.blocks[0][0].bn1.eps)) if first_block else set()
    missing = [k for k in target if k not in copied and k not in new and _ATTN not in k
               and not k.endswith('num_batches_tracked')]
    if no_place or bad_shape or missing:
        raise ValueError(
            f'These weights do not fit {type(model).__name__} as a timm MobileNet backbone: '
            f'no place for {no_place[:5]}, wrong shapes {bad_shape[:5]}, not filled {missing[:5]}. The '
            f'in1k_backbone tags load timm\'s {sorted(TIMM_BACKBONES.values())}.')
    return out
