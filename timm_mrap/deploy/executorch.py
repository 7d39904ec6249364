""" ExecuTorch export (XNNPACK delegate, fp32 or int8), run by ExecuTorch's own runtime

``torch.export`` records MRAP's reference math (``MRAP.statistics``), all of it ops the XNNPACK delegate takes but the
top-n sort, which runs in ExecuTorch's portable kernels: one partition per sort boundary. Activations are channels-last
from the input on, so those boundaries hand the delegate's NHWC layout over as it is. int8 is PT2E quantization with
ExecuTorch's ``XNNPACKQuantizer``, calibrated on the caller's batches (``timm_mrap.deploy.calibration_batches``).
executorch is the optional ``mobile`` extra (``pip install 'timm-mrap[mobile]'``), imported lazily.
"""
import warnings
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from ..layers import MRAP
from .formats import Predictor, require

__all__ = [
    'FLOAT_MODULES', 'ChannelsLastInput', 'executorch_program', 'load_executorch', 'lower_executorch',
    'write_executorch',
]


# Attention kept in float32 inside int8 programs (still in the XNNPACK delegate): its statistics (means of squared
# deviations, a square root) lose too much in int8, and XNNPACK's partitioner cannot split the quantized module around
# the top-n sort (dependency cycles).
FLOAT_MODULES = (MRAP,)


class ChannelsLastInput(nn.Module):
    """Runs ``model`` on a channels-last copy of its NCHW input.

    The exported program keeps a plain NCHW input while every activation inside is channels-last, the layout the
    XNNPACK delegate computes in, so the graph's exits from the delegate (MRAP's top-n sort) copy no layouts.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def _quantize_int8(model: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """PT2E int8 quantization with the XNNPACK quantizer, calibrated on ``calibration`` batches."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    for module_type in FLOAT_MODULES:
        quantizer.set_module_type(module_type, None)
    calibration = list(calibration)
    if not calibration:
        raise ValueError('int8 calibration got no batches; pass a calibration folder with images in it.')
    prepared = prepare_pt2e(torch.export.export(model, (example,), strict=False).module(), quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


def lower_executorch(
        model: nn.Module,
        example: torch.Tensor,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        channels_last: bool = True,
):
    """``torch.export`` → (int8 PT2E) → XNNPACK lowering; returns ExecuTorch's edge program manager.

    ``get_delegation_info(edge.exported_program().graph_module)`` tells what stayed outside the delegate;
    ``edge.to_executorch().buffer`` is the ``.pte`` program.
    """
    require('executorch', 'mobile')
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    model = ChannelsLastInput(model.eval()) if channels_last else model.eval()
    if int8:
        if calibration is None:
            warnings.warn('int8 calibration on random inputs: the scales fit noise, not images, so accuracy needs '
                          'real images (pass a calibration folder).')
            calibration = [torch.randn_like(example) for _ in range(8)]
        model = _quantize_int8(model, example, calibration)
    with torch.no_grad():
        program = torch.export.export(model, (example,), strict=False)
    program = program.run_decompositions({torch.ops.aten.adaptive_avg_pool2d.default: _adaptive_avg_pool2d})
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def _adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """Global average pooling as a mean, without the view of PyTorch's decomposition that XNNPACK leaves outside."""
    if list(output_size) == [1, 1]:
        return x.mean((2, 3), keepdim=True)
    return torch.ops.aten._adaptive_avg_pool2d.default(x, output_size)


def executorch_program(
        model: nn.Module,
        example: torch.Tensor,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        channels_last: Optional[bool] = None,
) -> bytes:
    """The ``.pte`` program of ``model`` for inputs shaped like ``example``.

    Args:
        channels_last: Channels-last activations inside the program (see ``ChannelsLastInput``). None takes them
            when the program then runs in ExecuTorch's runtime, else NCHW with a warning: some portable kernels
            outside the delegate (e.g. the ``amax`` of timm's CBAM) take NCHW tensors only.
        Others: as ``lower_executorch``.
    """
    calibration = None if calibration is None else list(calibration)  # may be used twice
    buffer = lower_executorch(model, example, int8, calibration, channels_last in (None, True)).to_executorch().buffer
    if channels_last is None and not _runs(buffer, example):
        warnings.warn('The channels-last ExecuTorch program does not run in ExecuTorch\'s runtime; exporting NCHW '
                      'activations instead (layout copies at every exit from the XNNPACK delegate).')
        buffer = lower_executorch(model, example, int8, calibration, False).to_executorch().buffer
    return buffer


def _runs(buffer: bytes, example: torch.Tensor) -> bool:
    from executorch.runtime import Runtime
    try:
        Runtime.get().load_program(buffer).load_method('forward').execute([example])
    except RuntimeError:
        return False
    return True


def write_executorch(
        model: nn.Module,
        example: torch.Tensor,
        path: Path,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        channels_last: Optional[bool] = None,
) -> None:
    """Write the ``.pte`` program of ``model`` (``executorch_program``) to ``path``; its one method ``forward`` takes a
    B x C x H x W float tensor (NCHW) of ``example``'s shape and returns the logits. ``calibration`` holds int8
    batches with the model's preprocessing applied (random inputs with a warning when None)."""
    path.write_bytes(executorch_program(model, example, int8, calibration, channels_last))


def load_executorch(pte_file: str) -> Predictor:
    """A function from a batch to the logits of a ``.pte`` program, run by ExecuTorch's runtime."""
    require('executorch', 'mobile')
    from executorch.runtime import Runtime
    method = Runtime.get().load_program(Path(pte_file)).load_method('forward')
    return lambda x: method.execute([x])[0]
