"""Images for int8 calibration and top-1 checks of exported programs, read by ``timm.data`` with the model's
eval preprocessing (``resolve_model_data_config`` + ``create_transform``) and timm's split rule."""
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from .formats import Predictor
from .inputs import model_in_chans

__all__ = ['calibration_batches', 'image_dataset', 'top1_accuracy']


def image_dataset(model: nn.Module, image_dir: str, split: str, img_size: Optional[int] = None):
    """timm's folder dataset of ``image_dir`` (or of its ``split`` sub-folder, found as ``create_dataset`` finds it:
    ``train``, ``val``, ``validation``, ...), transformed by the model's eval preprocessing at ``img_size``."""
    from timm.data import create_dataset, create_transform, resolve_model_data_config
    if not Path(image_dir).is_dir():
        raise FileNotFoundError(f'Image folder {image_dir} does not exist; pass a folder of images (an ImageFolder '
                                f'split such as data/train, or its parent).')
    config = resolve_model_data_config(model, args={'img_size': img_size, 'in_chans': model_in_chans(model)})
    transform = create_transform(**config, is_training=False)
    mode = 'RGB' if config['input_size'][0] == 3 else 'L'  # as timm's train.py
    try:
        return create_dataset('', root=image_dir, split=split, transform=transform, input_img_mode=mode)
    except RuntimeError as e:  # timm's folder reader raises RuntimeError for a folder without images
        raise ValueError(f'{image_dir} holds no images timm can read; point the flag at a folder of images.') from e


def calibration_batches(model: nn.Module, image_dir: str, count: int = 64, batch_size: int = 1,
                        img_size: Optional[int] = None, seed: int = 0) -> List[torch.Tensor]:
    """Up to ``count`` images of ``image_dir``'s training split (``image_dataset``), drawn with ``seed``, in batches
    of ``batch_size`` (the exported program's batch; an incomplete last batch is dropped)."""
    if count < batch_size:
        raise ValueError(f'--calibration-count {count} is smaller than the batch size {batch_size}; use at least '
                         f'{batch_size} images (64 or more is sensible).')
    dataset = image_dataset(model, image_dir, 'train', img_size)
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return [images for images, _ in DataLoader(Subset(dataset, chosen), batch_size=batch_size, drop_last=True)]


def top1_accuracy(model: nn.Module, image_dir: str, predictors: Dict[str, Predictor],
                  img_size: Optional[int] = None) -> Dict[str, float]:
    """Top-1 (%) of each predictor (name to a function from a 1 x C x H x W batch to logits, e.g.
    ``{'pytorch': model, 'executorch': ...}``) on ``image_dir``'s validation split (``image_dataset``; classes
    numbered as timm's training numbers them), one image at a time (the phone programs have a static batch of 1)."""
    dataset = image_dataset(model, image_dir, 'validation', img_size)
    correct = dict.fromkeys(predictors, 0)
    with torch.no_grad():
        for image, label in DataLoader(dataset, batch_size=1):
            for name, predict in predictors.items():
                correct[name] += int(predict(image).argmax(-1).item() == label.item())
    return {name: 100. * c / len(dataset) for name, c in correct.items()}
