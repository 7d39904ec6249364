"""One entry for every deployment format: export a model, run the result, and compare it with PyTorch.

Each format's module (``onnx``, ``executorch``, ``coreml``, ``litert``) holds only what differs: ``write_<format>``
turns the network and an example input into a file, ``load_<format>`` gives a function from a batch to the logits.
The output check, the input check, the example input and the comparison live here, once.
"""
import importlib
import importlib.util
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import MissingExtraError
from .inputs import check_input, output_path

__all__ = [
    'FORMATS', 'SUFFIXES', 'Predictor', 'check_export', 'compare_with_torch', 'export_model', 'require',
    'runtime_predictor',
]

FORMATS = ('onnx', 'executorch', 'coreml', 'litert')
SUFFIXES = {'onnx': '.onnx', 'executorch': '.pte', 'coreml': '.mlpackage', 'litert': '.tflite'}
RUNS_HERE = ('onnx', 'executorch', 'litert')  # Core ML runs on Apple platforms only

Predictor = Callable[[torch.Tensor], torch.Tensor]


def require(module: str, extra: str, package: str = '') -> None:
    """Raise ``MissingExtraError`` naming the pip command if ``module`` (from the ``extra``) cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f'{package or module} is not installed; install it with: pip install "timm-mrap[{extra}]" '
            f'(or pip install {package or module}).')


def _backend(fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f'Unknown format {fmt!r}; choose one of {FORMATS}.')
    return importlib.import_module(f'.{fmt}', __package__)


def export_model(model: nn.Module, fmt: str, output_file: str, input_size: Tuple[int, int, int] = (3, 224, 224),
                 batch_size: int = 1, overwrite: bool = False, validate_input: bool = True, **options) -> Path:
    """Export ``model`` (put in eval mode) to ``fmt`` (one of ``FORMATS``) and return the path written.

    Args:
        input_size: C x H x W of the example input (the static input of the phone formats; ONNX keeps the batch, and
            by default the size, dynamic and traces with a batch of at least 2).
        overwrite: Replace an existing ``output_file`` (else an error).
        validate_input: Check the input against the network (``check_input``); off for a bare module such as an MRAP.
        **options: The format's own: ONNX ``exporter``, ``dynamic_size``, ``opset``; ExecuTorch ``int8``,
            ``calibration`` (int8 batches), ``channels_last``.
    """
    if options.get('int8') and fmt != 'executorch':
        raise ValueError(f'int8 export is built for ExecuTorch (XNNPACK); use --format executorch --int8, or export '
                         f'{fmt} in float32.')
    write = getattr(_backend(fmt), f'write_{fmt}')
    path = output_path(output_file, overwrite)
    if validate_input:
        check_input(model, (batch_size,) + tuple(input_size))
    example = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    write(model.eval(), example, path, **options)
    return path


def runtime_predictor(fmt: str, path: str) -> Predictor:
    """A function from a batch to the logits of the exported file, run by its runtime on this machine."""
    if fmt not in RUNS_HERE:
        raise ValueError(f'{fmt} programs do not run on this machine; evaluate them on their platform.')
    return getattr(_backend(fmt), f'load_{fmt}')(str(path))


def compare_with_torch(model: nn.Module, predict: Predictor, input_shapes: Sequence[Sequence[int]],
                       seed: int = 0) -> Dict[Tuple[int, int], Tuple[float, float]]:
    """Run ``model`` and ``predict`` on one random input of each shape.

    Returns:
        ``{(H, W): (max |runtime - torch|, max |torch|)}``; a faithful export gives a ratio near float32 noise (~1e-6).
    """
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    results = {}
    for shape in input_shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = model(x)
        got = predict(x)
        if got.shape != expected.shape:
            raise RuntimeError(f'The exported output has shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}, '
                               f'for an input of {tuple(shape)}; export again with this input size.')
        results[tuple(shape[-2:])] = ((got - expected).abs().max().item(), expected.abs().max().item())
    return results


def check_export(model: nn.Module, fmt: str, path: str, input_shape: Sequence[int],
                 onnx_sizes: Sequence[Tuple[int, int]] = ()) -> Optional[Dict[Tuple[int, int], Tuple[float, float]]]:
    """Compare the exported file with PyTorch (``compare_with_torch``) where its runtime runs on this machine.

    Returns:
        The comparison, or None for Core ML. ONNX is checked at every size of ``onnx_sizes`` (its graph is dynamic);
        the others at ``input_shape``.
    """
    if fmt not in RUNS_HERE:
        return None
    shapes = [tuple(input_shape[:2]) + tuple(size) for size in onnx_sizes] if fmt == 'onnx' and onnx_sizes else []
    return compare_with_torch(model, runtime_predictor(fmt, path), shapes or [input_shape])
