"""One entry for every deployment format: export a model and check the result against PyTorch where it runs here."""
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ['FORMATS', 'SUFFIXES', 'export_model', 'check_export', 'runtime_predictor']

FORMATS = ('onnx', 'executorch', 'coreml', 'litert')
SUFFIXES = {'onnx': '.onnx', 'executorch': '.pte', 'coreml': '.mlpackage', 'litert': '.tflite'}


def _check_format(fmt: str, int8: bool) -> None:
    if fmt not in FORMATS:
        raise ValueError(f'Unknown format {fmt!r}; choose one of {FORMATS}.')
    if int8 and fmt != 'executorch':
        raise ValueError(f'int8 export is built for ExecuTorch (XNNPACK); use --format executorch --int8, or export '
                         f'{fmt} in float32.')


def export_model(
        model: nn.Module,
        fmt: str,
        output_file: str,
        input_size: Tuple[int, int, int] = (3, 224, 224),
        batch_size: int = 1,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        overwrite: bool = False,
        **kwargs,
) -> Path:
    """Export ``model`` to ``fmt`` (one of ``FORMATS``) and return the path written.

    ONNX keeps batch, height and width dynamic (``export_onnx``; ``kwargs`` take its ``exporter``, ``dynamic_size``
    and ``opset``); the phone formats have a static input of ``batch_size`` x ``input_size``. ``int8`` and
    ``calibration`` apply to ExecuTorch only.
    """
    _check_format(fmt, int8)
    if fmt == 'onnx':
        from .onnx import export_onnx
        return export_onnx(model, output_file, input_size, max(2, batch_size), overwrite=overwrite, **kwargs)
    if fmt == 'executorch':
        from .executorch import export_executorch
        return export_executorch(model, output_file, input_size, batch_size, int8=int8, calibration=calibration,
                                 overwrite=overwrite)
    if fmt == 'coreml':
        from .coreml import export_coreml
        return export_coreml(model, output_file, input_size, batch_size, overwrite=overwrite)
    from .litert import export_litert
    return export_litert(model, output_file, input_size, batch_size, overwrite=overwrite)


def check_export(
        model: nn.Module,
        fmt: str,
        path: str,
        input_shape: Sequence[int],
        onnx_sizes: Sequence[Tuple[int, int]] = (),
) -> Optional[Dict[Tuple[int, int], Tuple[float, float]]]:
    """Compare the exported file's output with PyTorch on random inputs, where its runtime runs on this machine.

    Returns:
        ``{(H, W): (max |runtime - torch|, max |torch|)}``, or None for Core ML (it runs on Apple platforms only).
        ONNX is checked at every size of ``onnx_sizes`` (its graph is dynamic); the others at ``input_shape``.
    """
    if fmt == 'onnx':
        from .onnx import onnx_parity
        return onnx_parity(model, path, onnx_sizes or [tuple(input_shape[-2:])], batch_size=input_shape[0])
    if fmt == 'executorch':
        from .executorch import executorch_parity
        return executorch_parity(model, path, input_shape)
    if fmt == 'litert':
        from .litert import litert_parity
        return litert_parity(model, path, input_shape)
    return None


def runtime_predictor(fmt: str, path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a batch to the logits of the exported file, run by its runtime on this machine."""
    if fmt == 'onnx':
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    if fmt == 'executorch':
        from .executorch import load_executorch
        method = load_executorch(path)
        return lambda x: method.execute([x])[0]
    if fmt == 'litert':
        from .litert import load_litert
        return load_litert(path)
    raise ValueError(f'{fmt} programs do not run on this machine; evaluate them on their platform.')
