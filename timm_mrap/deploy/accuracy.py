"""Top-1 of a model and of its exported program on an ImageFolder split, with the model's own preprocessing."""
from typing import Callable, Dict, Optional

import torch
from torch import nn

__all__ = ['top1_accuracy']


def top1_accuracy(
        model: nn.Module,
        image_dir: str,
        predictors: Dict[str, Callable[[torch.Tensor], torch.Tensor]],
        img_size: Optional[int] = None,
) -> Dict[str, float]:
    """Top-1 (%) of each predictor on ``image_dir`` (``<class>/*`` folders, classes in sorted order as timm's and
    torchvision's ImageFolder number them), one image at a time through the model's eval preprocessing.

    Args:
        model: The network whose ``pretrained_cfg`` gives the preprocessing.
        image_dir: An ImageFolder split (e.g. ``validation/``).
        predictors: Name to a function from a 1 x C x H x W batch to logits (``{'pytorch': model, 'executorch': ...}``).
        img_size: Height = width of the transformed images; the model's default when None.
    """
    from timm.data import create_transform, resolve_model_data_config
    from torchvision.datasets import ImageFolder
    config = resolve_model_data_config(model)
    if img_size is not None:
        config['input_size'] = (config['input_size'][0], img_size, img_size)
    dataset = ImageFolder(image_dir, transform=create_transform(**config, is_training=False))
    correct = {name: 0 for name in predictors}
    with torch.no_grad():
        for image, label in dataset:
            batch = image[None]
            for name, predict in predictors.items():
                correct[name] += int(predict(batch).argmax(-1).item() == label)
    return {name: 100. * c / len(dataset) for name, c in correct.items()}
