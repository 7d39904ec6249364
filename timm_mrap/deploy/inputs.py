""" Input checks for the deployment entry points (export, attention maps): image batches, output files, model flags

The models keep a branch-free ``forward`` (so they script, trace, export and compile); the checks live here. Each
error names the problem and the fix.
"""
import argparse
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

__all__ = ['model_in_chans', 'model_stride', 'check_input', 'add_model_arguments', 'output_path']


def output_path(output_file: str, overwrite: bool = False) -> Path:
    """``output_file`` as a ``Path``; an existing file or folder is an error unless ``overwrite``."""
    path = Path(output_file)
    if path.exists() and not overwrite:
        raise FileExistsError(f'{path} exists; choose another output file or pass --overwrite to replace it.')
    return path


def model_in_chans(model: nn.Module) -> int:
    """Number of input channels the model's stem expects."""
    first_conv = model.pretrained_cfg.get('first_conv') if hasattr(model, 'pretrained_cfg') else None
    stem = model.get_submodule(first_conv) if first_conv else None
    if isinstance(stem, nn.Conv2d):
        return stem.in_channels
    return next(m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def model_stride(model: nn.Module) -> int:
    """Total stride (reduction) of the deepest feature map, from timm's ``feature_info``: the smallest height / width
    the network takes (every stage sees at least one stride of pixels; the last stage's map is then 1 x 1, where
    MRAP's std is 0 in eager and exported graphs alike)."""
    feature_info = getattr(model, 'feature_info', None)
    if feature_info:
        infos = feature_info.get_dicts() if hasattr(feature_info, 'get_dicts') else feature_info
        return max(int(info['reduction']) for info in infos)
    return 32


def check_input(model: nn.Module, x: Union[torch.Tensor, Sequence[int]]) -> None:
    """Raise a ``ValueError`` that names the fix if ``x`` (a B x C x H x W batch or its shape; C x H x W is taken as
    one image) does not suit ``model``."""
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(int(s) for s in x)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4:
        raise ValueError(
            f'Expected a batch of images B x C x H x W (or C x H x W), got shape {shape}; '
            f'add a batch dimension with x.unsqueeze(0) for a single image.')
    _, chans, height, width = shape
    in_chans = model_in_chans(model)
    if chans != in_chans:
        hint = ' (grayscale? repeat it to 3 channels, or create the model with in_chans=1)' if chans == 1 else ''
        raise ValueError(
            f'The input has {chans} channels but the model expects {in_chans}{hint}; '
            f'convert the image or create the model with in_chans={chans}.')
    min_size = model_stride(model)
    if min(height, width) < min_size:
        raise ValueError(
            f'The input is {height} x {width} px, too small for a network of total stride {min_size} '
            f'(every stage must see at least one stride of pixels); resize it to at least {min_size} x {min_size} px '
            f'(64 px or more is a sensible minimum).')


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model-loading flags shared by the commands that take a model (``timm_mrap.checkpoint.load_model``'s)."""
    parser.add_argument('--model', required=True, help='registered name (mobilenetv2_mrap) or local-dir:/hf-hub: name')
    parser.add_argument('--checkpoint', default=None, help='timm checkpoint to load (train.py .pth.tar, safetensors)')
    parser.add_argument('--pretrained', action='store_true', help='load the name\'s pretrained weights')
    parser.add_argument('--num-classes', type=int, default=None, help='classifier size (default: from checkpoint)')
