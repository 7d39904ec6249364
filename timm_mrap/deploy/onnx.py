""" ONNX export with dynamic batch and spatial size (timm's ``timm.utils.onnx.onnx_export``), run by onnxruntime

Exporters: ``'dynamo'`` (torch's default, ``torch.export``) and ``'torchscript'`` (the legacy tracer, faster); the
``onnx`` extra brings onnx, onnxruntime and onnxscript.
"""
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .formats import Predictor, compare_with_torch, export_model

__all__ = ['EXPORTERS', 'export_onnx', 'load_onnx', 'onnx_parity', 'write_onnx']

EXPORTERS = ('dynamo', 'torchscript')


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path, exporter: str = 'dynamo', dynamic_size: bool = True,
               opset: Optional[int] = None) -> None:
    """Write ``model`` to ``path`` as ONNX, checked by onnx; the input is ``input0`` (B x C x H x W), the output
    ``output0``. The batch axis is dynamic (traced at batch >= 2), and height / width too with ``dynamic_size``."""
    from timm.utils.onnx import onnx_export
    if exporter not in EXPORTERS:
        raise ValueError(f'Unknown exporter {exporter!r}; choose one of {EXPORTERS}.')
    onnx_export(model, str(path), batch_size=max(2, example.shape[0]), input_size=tuple(example.shape[1:]),
                opset=opset, dynamic_size=dynamic_size, use_dynamo=exporter == 'dynamo', check=True)


def export_onnx(model: nn.Module, output_file: str, input_size: Tuple[int, int, int] = (3, 224, 224), **kwargs) -> Path:
    """``export_model(model, 'onnx', ...)`` (traced at batch 2): ``kwargs`` take its ``batch_size``, ``overwrite``,
    ``validate_input`` and ``write_onnx``'s ``exporter``, ``dynamic_size`` and ``opset``."""
    return export_model(model, 'onnx', output_file, input_size, **{'batch_size': 2, **kwargs})


def load_onnx(onnx_file: str, threads: Optional[int] = None) -> Predictor:
    """A function from a batch to the logits of the ONNX graph, run by onnxruntime's CPU provider (with ``threads``
    intra-op threads; onnxruntime's default when None)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
    session = onnxruntime.InferenceSession(str(onnx_file), options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def onnx_parity(model: nn.Module, onnx_file: str, input_sizes: Sequence[Tuple[int, int]] = ((224, 224),),
                batch_size: int = 2, seed: int = 0) -> Dict[Tuple[int, int], Tuple[float, float]]:
    """``compare_with_torch`` of ``model`` and the ONNX graph at each height x width of ``input_sizes``."""
    import onnx
    in_chans = onnx.load(str(onnx_file)).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    shapes = [(batch_size, in_chans, h, w) for h, w in input_sizes]
    return compare_with_torch(model, load_onnx(onnx_file), shapes, seed)
