""" Convert the authors' reference checkpoints (MRAP / MAF repositories) to timm Hub-format folders

Reference units ``backbone.stage{S}.unit{U}`` map in order onto timm's ``blocks.{i}.{j}``; ``backbone.data_bn`` is
folded into the pretrained config's mean / std; every key on both sides must be used (docs/conversion.md).
"""
import argparse
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .checkpoint import checkpoint_num_classes, read_checkpoint, reraise_as, save_hub_folder
from .errors import ConversionError

__all__ = ['ConversionError', 'convert_state_dict', 'fold_data_bn', 'convert_checkpoint', 'INPUT_NORMS']

_UNIT_RE = re.compile(r'^backbone\.stage(\d+)\.unit(\d+)\.(.+)$')

# reference module -> timm module: inside a V2 / V3 unit (conv1-3) or a V1 unit (conv_dw, conv_pw)
_UNIT_MODULES = {
    'conv1.conv': 'conv_pw', 'conv1.bn': 'bn1', 'conv2.conv': 'conv_dw', 'conv2.bn': 'bn2', 'conv3.conv': 'conv_pwl',
    'conv3.bn': 'bn3', 'conv_dw.conv': 'conv_dw', 'conv_dw.bn': 'bn1', 'conv_pw.conv': 'conv_pw', 'conv_pw.bn': 'bn2',
}
# ... of the whole network; V3's final_conv1 is timm's last block (``_FINAL_CONV1``)
_HEAD_MODULES = {
    'backbone.init_conv.conv': 'conv_stem', 'backbone.init_conv.bn': 'bn1', 'classifier.conv': 'classifier',
    'backbone.final_conv.conv': 'conv_head', 'backbone.final_conv.bn': 'bn2',  # V2
    'backbone.final_conv2.conv': 'conv_head',  # V3: 960 -> 1280, no BN
}
_FINAL_CONV1 = {'backbone.final_conv1.conv': 'conv', 'backbone.final_conv1.bn': 'bn1'}

# attention modules: reference prefix (inside a unit) -> timm attribute, and their parameter names
ATTN_PREFIXES = {
    'TOPIMAP.': 'se.',  # MRAP, before the pointwise conv
    'cbamm.': 'attn_post.',  # MAFC (MAF repository), after the pointwise / projection conv
    'mafc.': 'attn_post.',  # the same, under the attribute name of the authors' later files
}
ATTN_PARAM_KEYS = {
    'ChannelGate.mlp.1.': 'fc1.',
    'ChannelGate.mlp.3.': 'fc2.',
    'ChannelGate.spatialConv.conv.': 'spatial_conv.',
    'ChannelGate.spatialConv.bn.': 'spatial_bn.',
    'SpatialGate.spatial.conv.': 'spatial_conv.',
    'SpatialGate.spatial.bn.': 'spatial_bn.',
}
_ATTN_MODULES = {ref + ref_param[:-1]: timm_attr + timm_param[:-1] for ref, timm_attr in ATTN_PREFIXES.items()
                 for ref_param, timm_param in ATTN_PARAM_KEYS.items()}

# what the reference training scripts did to the [0, 1] image before the network (and its data_bn): mean, std
INPUT_NORMS = {
    'none': ((0., 0., 0.), (1., 1., 1.)),  # MRAP_Dogs.py
    'imagenet': (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),  # MAFAttention_main.py
}


def fold_data_bn(state_dict: Dict[str, torch.Tensor], eps: float = 1e-5, input_mean: Sequence[float] = (0., 0., 0.),
                 input_std: Sequence[float] = (1., 1., 1.)) -> Tuple[Tuple[float, ...], ...]:
    """``(mean, std)`` with ``(x - mean) / std == data_bn((x - input_mean) / input_std)`` for eval-mode ``data_bn``."""
    bn = {k: state_dict[f'backbone.data_bn.{k}'].double() for k in ('weight', 'bias', 'running_mean', 'running_var')}
    scale = bn['weight'] / torch.sqrt(bn['running_var'] + eps)
    shift = bn['bias'] - bn['running_mean'] * scale
    in_mean, in_std = (torch.tensor(v, dtype=torch.float64) for v in (input_mean, input_std))
    return tuple((in_mean - in_std * shift / scale).tolist()), tuple((in_std / scale).tolist())


def _target_key(key: str, unit_to_block: Dict[Tuple[int, int], str], extra_block: Optional[str]) -> Optional[str]:
    """timm's key for one reference key (None when it has no place); ``backbone.data_bn`` is folded, not mapped."""
    module, _, param = key.rpartition('.')
    m = _UNIT_RE.match(module)
    if m:
        inner = _UNIT_MODULES.get(m[3]) or _ATTN_MODULES.get(m[3])
        return f'{unit_to_block[(int(m[1]), int(m[2]))]}.{inner}.{param}' if inner else None
    if module in _FINAL_CONV1 and extra_block is not None:
        return f'{extra_block}.{_FINAL_CONV1[module]}.{param}'
    return f'{_HEAD_MODULES[module]}.{param}' if module in _HEAD_MODULES else None


def convert_state_dict(ref_state_dict: Dict[str, torch.Tensor], model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Map a bare reference state dict (``backbone.*``, ``classifier.conv.*``) onto ``model``'s keys, in float32
    (integer buffers kept); every key on both sides must be accounted for."""
    blocks = [f'blocks.{i}.{j}' for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    units = sorted({(int(m[1]), int(m[2])) for m in map(_UNIT_RE.match, ref_state_dict) if m})
    if len(units) > len(blocks):
        raise ConversionError(
            f'The checkpoint has {len(units)} units but {type(model).__name__} has {len(blocks)} blocks; '
            f'is --model the architecture the checkpoint was trained with?')
    unit_to_block, extra_block = dict(zip(units, blocks)), blocks[len(units)] if len(blocks) > len(units) else None
    converted, unused = {}, []
    for key, value in ref_state_dict.items():
        if key.startswith('backbone.data_bn.'):
            continue  # folded into mean / std
        target = _target_key(key, unit_to_block, extra_block)
        if target is None:
            unused.append(key)
            continue
        value = value.flatten(1) if key == 'classifier.conv.weight' and value.ndim == 4 else value
        converted[target] = value.float() if value.is_floating_point() else value
    expected = model.state_dict()
    missing, unknown = sorted(set(expected) - set(converted)), sorted(set(converted) - set(expected))
    if unused or missing or unknown:
        raise ConversionError(
            f'The checkpoint does not fit {type(model).__name__} ({len(expected)} tensors): '
            f'{len(unused)} reference keys have no place {unused[:5]}, '
            f'{len(missing)} model keys are not filled {missing[:5]}, '
            f'{len(unknown)} mapped keys do not exist {unknown[:5]}. Check --model (e.g. mobilenetv3_mrap for a '
            f'MobileNetV3 checkpoint; *_mafc for MAF checkpoints).')
    bad_shapes = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in converted.items()
                  if v.shape != expected[k].shape]
    if bad_shapes:
        raise ConversionError(
            f'Shapes differ for {len(bad_shapes)} tensors, e.g. {bad_shapes[:3]} (checkpoint, model); '
            f'the checkpoint belongs to another architecture or width than the model.')
    return converted


def convert_checkpoint(src: str, model_name: str, out_dir: Optional[str] = None, num_classes: Optional[int] = None,
                       overwrite: bool = False, input_norm: str = 'auto', **model_kwargs) -> torch.nn.Module:
    """A reference checkpoint as a timm model (eval mode, mean / std from the folded ``data_bn``), also written as a
    Hub-format folder to ``out_dir`` unless None.

    Args:
        num_classes: Expected classes; inferred from the checkpoint when None, an error if they differ.
        input_norm: What the reference script did to the [0, 1] image: ``'none'``, ``'imagenet'`` or ``'auto'``.
        **model_kwargs: Extra model arguments (e.g. ``pool_types``) recorded in the config.
    """
    if input_norm != 'auto' and input_norm not in INPUT_NORMS:
        raise ValueError(f'input_norm must be "auto" or one of {tuple(INPUT_NORMS)}, not {input_norm!r}.')
    with reraise_as(ConversionError, missing_file=False):
        checkpoint = read_checkpoint(src)
    ref = checkpoint.state_dict
    if input_norm == 'auto':  # MRAP_Dogs.py fed [0, 1] pixels to data_bn; MAFAttention_main.py normalised first
        input_norm = 'none' if checkpoint.kind != 'reference-maf' and 'backbone.data_bn.weight' in ref else 'imagenet'
    input_mean, input_std = INPUT_NORMS[input_norm]
    if 'classifier.conv.weight' not in ref:
        raise ConversionError(f'{src} has no classifier.conv.weight: not a reference MRAP / MAF network.')
    found_classes = int(ref['classifier.conv.weight'].shape[0])
    with reraise_as(ConversionError):
        checkpoint_num_classes(num_classes, found_classes, f'{src}', model_name)
    if out_dir is not None and Path(out_dir).exists() and any(Path(out_dir).iterdir()) and not overwrite:
        raise FileExistsError(f'{out_dir} exists and is not empty; choose another --out or pass --overwrite.')
    model = timm.create_model(model_name, pretrained=False, num_classes=found_classes, **model_kwargs)
    model.load_state_dict(convert_state_dict(ref, model))
    model.eval()
    mean, std = (fold_data_bn(ref, input_mean=input_mean, input_std=input_std) if 'backbone.data_bn.weight' in ref
                 else (tuple(input_mean), tuple(input_std)))
    model.pretrained_cfg = {**model.pretrained_cfg, 'mean': mean, 'std': std, 'num_classes': found_classes}
    if out_dir is not None:
        save_hub_folder(model, out_dir, data_config={'mean': mean, 'std': std})
    return model


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], prog='python -m timm_mrap.convert')
    parser.add_argument('src', help='reference checkpoint (.pth / .pth.tar)')
    parser.add_argument('--model', required=True, help='registered model name, e.g. mobilenetv3_mrap')
    parser.add_argument('--out', required=True, help='output folder (config.json + model.safetensors)')
    parser.add_argument('--num-classes', type=int, default=None, help='expected classes (default: inferred)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing, non-empty --out folder')
    parser.add_argument('--input-norm', default='auto', choices=('auto',) + tuple(INPUT_NORMS),
                        help='what the reference script did to the [0, 1] image (auto: by checkpoint)')
    args = parser.parse_args(argv)
    try:
        model = convert_checkpoint(args.src, args.model, args.out, args.num_classes, args.overwrite, args.input_norm)
    except (ConversionError, FileExistsError, FileNotFoundError) as e:
        parser.exit(2, f'error: {e}\n')
    cfg = model.pretrained_cfg
    print(f'Wrote {args.out}: {args.model}, {model.num_classes} classes, '
          f'mean={tuple(round(v, 6) for v in cfg["mean"])}, std={tuple(round(v, 6) for v in cfg["std"])}')
    print(f"Load it with timm.create_model('local-dir:{args.out}', pretrained=True)")


if __name__ == '__main__':
    main()
