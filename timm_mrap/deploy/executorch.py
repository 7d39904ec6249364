""" ExecuTorch export (XNNPACK delegate, fp32 or int8) and a parity check with ExecuTorch's own runtime

``torch.export`` records the network with MRAP's reference math (``MRAP.statistics``): everything but
the top-n sort is an op the XNNPACK delegate takes. The sort runs in ExecuTorch's portable kernels, so the graph
leaves the delegate at every MRAP. The activations are made channels-last at the input, so each of those boundaries
hands the delegate's own NHWC layout over as it is instead of converting full-size activations to NCHW and back.

int8 is PyTorch 2 export quantization (PT2E) with ExecuTorch's ``XNNPACKQuantizer`` (symmetric, per-channel weights,
static activations), calibrated on batches the caller gives (see ``timm_mrap.deploy.calibration``).

executorch is the optional ``mobile`` extra (``pip install 'timm-mrap[mobile]'``), imported lazily.
"""
import warnings
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

from ..layers import MRAP
from .inputs import check_input, output_path
from .extras import require

__all__ = [
    'FLOAT_MODULES', 'ChannelsLastInput', 'executorch_program', 'export_executorch', 'lower_executorch',
    'executorch_parity', 'load_executorch',
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
    captured = torch.export.export(model, (example,), strict=False).module()
    prepared = prepare_pt2e(captured, quantizer)
    count = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
            count += 1
    if not count:
        raise ValueError('int8 calibration got no batches; pass a calibration folder with images in it.')
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
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


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
            when the program then runs in ExecuTorch's runtime, else NCHW: some portable kernels outside the delegate
            (e.g. the ``amax`` of timm's CBAM) take NCHW tensors only.
        Others: as ``lower_executorch``.
    """
    if calibration is not None:
        calibration = list(calibration)  # may be used twice
    for layout in ([channels_last] if channels_last is not None else [True, False]):
        buffer = lower_executorch(model, example, int8, calibration, layout).to_executorch().buffer
        if channels_last is not None or _runs(buffer, example):
            return buffer
    return buffer


def _runs(buffer: bytes, example: torch.Tensor) -> bool:
    from executorch.runtime import Runtime
    try:
        Runtime.get().load_program(buffer).load_method('forward').execute([example])
    except RuntimeError:
        return False
    return True


def export_executorch(
        model: nn.Module,
        output_file: str,
        input_size: Tuple[int, int, int] = (3, 224, 224),
        batch_size: int = 1,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        channels_last: Optional[bool] = None,
        overwrite: bool = False,
        validate_input: bool = True,
) -> Path:
    """Export ``model`` to an ExecuTorch ``.pte`` program for the XNNPACK delegate (static input size).

    Args:
        model: The network; put in eval mode.
        output_file: Target ``.pte`` path; an existing file is an error unless ``overwrite``.
        input_size: C x H x W of the program's input.
        batch_size: Batch of the program's input.
        int8: Quantize to int8 (PT2E, XNNPACK quantizer) before lowering.
        calibration: Batches (B x C x H x W float tensors, the model's preprocessing applied) for int8; random
            inputs with a warning when None.
        channels_last: Channels-last activations inside the program; None: where the program runs so
            (``executorch_program``).
        overwrite: Replace an existing ``output_file``.
        validate_input: Check ``input_size`` against the network's channels and strides (``check_input``).

    Returns:
        The path written. The program's one method ``forward`` takes a B x C x H x W float tensor (NCHW) and returns
        the logits.
    """
    path = output_path(output_file, overwrite)
    if validate_input:
        check_input(model, (batch_size,) + tuple(input_size))
    example = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    buffer = executorch_program(model, example, int8, calibration, channels_last)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer)
    return path


def load_executorch(pte_file: str):
    """The ``forward`` method of a ``.pte`` program, loaded by ExecuTorch's runtime (call ``.execute([x])``)."""
    require('executorch', 'mobile')
    from executorch.runtime import Runtime
    return Runtime.get().load_program(Path(pte_file)).load_method('forward')


def executorch_parity(
        model: nn.Module,
        pte_file: str,
        input_shape: Sequence[int],
        seed: int = 0,
) -> Dict[Tuple[int, int], Tuple[float, float]]:
    """Run ``model`` and the ``.pte`` program on one random input of the program's static shape.

    Returns:
        ``{(H, W): (max |executorch - torch|, max |torch|)}``, as ``onnx_parity`` does.
    """
    method = load_executorch(pte_file)
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model.eval()(x)
    got = method.execute([x])[0]
    if got.shape != expected.shape:
        raise AssertionError(f'ExecuTorch output shape {tuple(got.shape)} != torch {tuple(expected.shape)}')
    return {tuple(input_shape[-2:]): ((got - expected).abs().max().item(), expected.abs().max().item())}
