""" ONNX export of the MRAP MobileNets with dynamic batch and spatial size, and an onnxruntime parity check

Wraps timm's own exporter (``timm.utils.onnx.onnx_export``). Two exporters are supported:

* ``'dynamo'`` (torch's default since 2.9): ``torch.export`` then ONNX translation. Dynamic batch / height / width:
  MRAP's unbiased-std factor ``n / max(n - 1, 1)`` stays a symbolic expression of the runtime size, so the graph is
  right from 1 x 1 maps up. Slow on a small CPU (about 1.5 min for a full MobileNet on 2 cores).
* ``'torchscript'`` (torch's legacy tracer): the same graph in a few seconds; the tracer records shapes as tensors, so
  the factor follows the runtime size there too.

onnx, onnxruntime and onnxscript are optional dependencies (``pip install 'timm-mrap[onnx]'``), imported lazily.
"""
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .inputs import check_input, output_path

__all__ = ['EXPORTERS', 'export_onnx', 'onnx_parity']

EXPORTERS = ('dynamo', 'torchscript')


def export_onnx(
        model: nn.Module,
        output_file: str,
        input_size: Tuple[int, int, int] = (3, 224, 224),
        batch_size: int = 2,
        exporter: str = 'dynamo',
        dynamic_size: bool = True,
        opset: Optional[int] = None,
        overwrite: bool = False,
        validate_input: bool = True,
) -> Path:
    """Export ``model`` (eval mode) to ONNX with a dynamic batch (and height / width) axis, checked by onnx.

    Args:
        model: The network; put in eval mode.
        output_file: Target ``.onnx`` path; an existing file is an error unless ``overwrite``.
        input_size: C x H x W of the example input that is traced.
        batch_size: Batch of the example input (>= 2 keeps the batch axis dynamic with ``torch.export``).
        exporter: ``'dynamo'`` or ``'torchscript'`` (see the module docstring).
        dynamic_size: Make height and width dynamic as well as the batch.
        opset: ONNX opset; the exporter's default when None.
        overwrite: Replace an existing ``output_file``.
        validate_input: Check ``input_size`` against the network's channels and strides (``check_input``);
            turn off for a bare module such as a single ``MRAP``.

    Returns:
        The path written. The graph's input is ``input0`` (B x C x H x W), its output ``output0``.
    """
    from timm.utils.onnx import onnx_export
    if exporter not in EXPORTERS:
        raise ValueError(f'Unknown exporter {exporter!r}; choose one of {EXPORTERS}.')
    path = output_path(output_file, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    if validate_input:
        check_input(model, (batch_size,) + tuple(input_size))
    model.eval()
    onnx_export(
        model,
        str(path),
        batch_size=max(2, batch_size),
        input_size=tuple(input_size),
        opset=opset,
        dynamic_size=dynamic_size,
        use_dynamo=exporter == 'dynamo',
        check=True,
    )
    return path


def onnx_parity(
        model: nn.Module,
        onnx_file: str,
        input_sizes: Sequence[Tuple[int, int]] = ((224, 224),),
        batch_size: int = 2,
        seed: int = 0,
) -> Dict[Tuple[int, int], Tuple[float, float]]:
    """Run ``model`` and the ONNX graph with onnxruntime on random inputs of each size.

    Returns:
        ``{(H, W): (max |onnx - torch|, max |torch|)}``; a faithful export gives a ratio near float32 noise (~1e-6).
    """
    import onnxruntime
    session = onnxruntime.InferenceSession(str(onnx_file), providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name
    in_chans = session.get_inputs()[0].shape[1]
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    results = {}
    for height, width in input_sizes:
        x = torch.randn(batch_size, in_chans, height, width, generator=generator)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])
        if got.shape != expected.shape:
            raise AssertionError(f'ONNX output shape {tuple(got.shape)} != torch {tuple(expected.shape)} at {x.shape}')
        results[(height, width)] = ((got - expected).abs().max().item(), expected.abs().max().item())
    return results
