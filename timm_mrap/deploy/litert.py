""" LiteRT (TensorFlow Lite) export through litert-torch, with a parity check in LiteRT's interpreter

``litert_torch.convert`` records the network with ``torch.export`` (MRAP's exported statistics) and writes a
``.tflite`` flat buffer; ``ai_edge_litert``'s interpreter runs it on Linux. The conversion takes litert-torch's
TFLite decompositions (``LITERT_TORCH_FULL_TFL_DECOMPS``), so MRAP's top-n sort becomes the ``TOPK_V2`` builtin
instead of a StableHLO sort that LiteRT's interpreter cannot run. litert-torch (0.10) declares torch < 2.15
and brings jax; it is the optional ``litert`` extra, imported lazily.
"""
import os
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import nn

from .inputs import check_input, output_path
from .extras import require

__all__ = ['export_litert', 'litert_parity', 'load_litert']

_TFL_DECOMPS = 'LITERT_TORCH_FULL_TFL_DECOMPS'


def export_litert(
        model: nn.Module,
        output_file: str,
        input_size: Tuple[int, int, int] = (3, 224, 224),
        batch_size: int = 1,
        overwrite: bool = False,
        validate_input: bool = True,
) -> Path:
    """Convert ``model`` (fp32, static NCHW input) to a LiteRT ``.tflite`` file.

    Args:
        model: The network; put in eval mode.
        output_file: Target ``.tflite`` path; an existing file is an error unless ``overwrite``.
        input_size: C x H x W of the model's input.
        batch_size: Batch of the model's input.
        overwrite: Replace an existing ``output_file``.
        validate_input: Check ``input_size`` against the network's channels and strides (``check_input``).
    """
    require('litert_torch', 'litert', 'litert-torch')
    import litert_torch
    path = output_path(output_file, overwrite)
    if validate_input:
        check_input(model, (batch_size,) + tuple(input_size))
    example = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    previous = os.environ.get(_TFL_DECOMPS)
    os.environ[_TFL_DECOMPS] = '1'
    try:
        edge_model = litert_torch.convert(model.eval(), (example,))
    finally:
        if previous is None:
            del os.environ[_TFL_DECOMPS]
        else:
            os.environ[_TFL_DECOMPS] = previous
    path.parent.mkdir(parents=True, exist_ok=True)
    edge_model.export(str(path))
    return path


def litert_parity(
        model: nn.Module,
        tflite_file: str,
        input_shape: Sequence[int],
        seed: int = 0,
) -> Dict[Tuple[int, int], Tuple[float, float]]:
    """Run ``model`` and the ``.tflite`` file (LiteRT's interpreter) on one random input of the file's shape.

    Returns:
        ``{(H, W): (max |litert - torch|, max |torch|)}``, as ``onnx_parity`` does.
    """
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    got = load_litert(tflite_file)(x)
    with torch.no_grad():
        expected = model.eval()(x)
    return {tuple(input_shape[-2:]): ((got - expected).abs().max().item(), expected.abs().max().item())}


def load_litert(tflite_file: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a batch to the logits of the ``.tflite`` file, run by LiteRT's interpreter."""
    require('ai_edge_litert', 'litert', 'ai-edge-litert')
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(tflite_file))
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]['index']
    output_index = interpreter.get_output_details()[0]['index']

    def predict(x: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(input_index, x.numpy())
        interpreter.invoke()
        return torch.from_numpy(interpreter.get_tensor(output_index).copy())
    return predict
