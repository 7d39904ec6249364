"""Calibration batches for int8 export: images from a folder, through the model's own preprocessing."""
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

__all__ = ['IMAGE_EXTENSIONS', 'calibration_batches']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def calibration_batches(
        model: nn.Module,
        image_dir: str,
        count: int = 64,
        batch_size: int = 1,
        img_size: Optional[int] = None,
        seed: int = 0,
) -> List[torch.Tensor]:
    """Up to ``count`` images of ``image_dir`` (searched recursively, e.g. an ImageFolder split), transformed by the
    model's eval preprocessing (timm's ``resolve_model_data_config`` + ``create_transform``), in batches.

    Args:
        model: The network whose ``pretrained_cfg`` gives the preprocessing (mean, std, crop).
        image_dir: Folder of images; class sub-folders are fine.
        count: Images to use, drawn with ``seed`` from all the images found.
        batch_size: Images per batch (the exported program's batch).
        img_size: Height = width of the transformed images; the model's default when None.
        seed: Seed of the draw.
    """
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config
    root = Path(image_dir)
    if not root.is_dir():
        raise FileNotFoundError(f'Calibration folder {root} does not exist; pass a folder of images (e.g. a training '
                                f'split) with --calibration-dir.')
    files = sorted(p for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f'Calibration folder {root} holds no images ({", ".join(IMAGE_EXTENSIONS)}); '
                         f'point --calibration-dir at a folder of training images.')
    if count < batch_size:
        raise ValueError(f'--calibration-count {count} is smaller than the batch size {batch_size}; use at least '
                         f'{batch_size} images (64 or more is sensible).')
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = [files[i] for i in order[:count]]
    config = resolve_model_data_config(model)
    if img_size is not None:
        config['input_size'] = (config['input_size'][0], img_size, img_size)
    transform = create_transform(**config, is_training=False)
    mode = 'L' if config['input_size'][0] == 1 else 'RGB'
    images = [transform(Image.open(f).convert(mode)) for f in chosen]
    usable = len(images) - len(images) % batch_size
    return [torch.stack(images[i:i + batch_size]) for i in range(0, usable, batch_size)]
