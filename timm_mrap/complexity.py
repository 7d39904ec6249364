""" Model size and compute: parameter counts and multiply-accumulates (MACs)

MACs are counted with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2). It counts
convolutions and matrix products (conv, linear, matmul, bmm) only; element-wise work, pooling, statistics and
top-k are not counted, which is also the convention of the fvcore / thop counters used for the paper's tables.
"""
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_params', 'count_macs', 'MAC_COUNTER']

MAC_COUNTER = 'torch.utils.flop_counter.FlopCounterMode (conv/linear/matmul; MACs = FLOPs / 2)'


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), batch_size: int = 1) -> int:
    """Multiply-accumulates of one eval-mode forward pass per image, counted by ``MAC_COUNTER``.

    Args:
        model: The model; its training mode is restored afterwards.
        input_size: C x H x W of one input.
        batch_size: Images in the counted pass (the result is divided by it).
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(batch_size, *input_size, device=param.device, dtype=param.dtype)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2 // batch_size
