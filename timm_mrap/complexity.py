""" Model size and compute: parameter counts and multiply-accumulates (MACs)

MACs are PyTorch's ``FlopCounterMode`` FLOPs / 2: convolutions and matrix products only, not element-wise work,
pooling, statistics or top-k (the fvcore / thop convention of the paper's tables)."""
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_params', 'count_macs', 'MAC_COUNTER']

MAC_COUNTER = 'torch.utils.flop_counter.FlopCounterMode (conv/linear/matmul; MACs = FLOPs / 2)'


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of one eval-mode forward pass of one ``input_size`` (C x H x W) image."""
    was_training = model.training
    param = next(model.parameters())
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, *input_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
