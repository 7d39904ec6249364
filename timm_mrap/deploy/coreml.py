""" Core ML export through coremltools (an ML program for iOS 17+ / macOS 14+)

``torch.export`` records the network with MRAP's exported statistics, and coremltools converts the program. Core ML
models run only on Apple platforms: on Linux the conversion is all that can be checked, so ``export_coreml`` reads
the saved package's spec back and checks its input and output.

coremltools comes with the ``mobile`` extra (executorch depends on it), imported lazily.
"""
from pathlib import Path
from typing import Tuple

import torch
from torch import nn

from .inputs import check_input, output_path
from .extras import require

__all__ = ['export_coreml']


def export_coreml(
        model: nn.Module,
        output_file: str,
        input_size: Tuple[int, int, int] = (3, 224, 224),
        batch_size: int = 1,
        overwrite: bool = False,
        validate_input: bool = True,
) -> Path:
    """Convert ``model`` (fp32, static input) to a Core ML ``.mlpackage``.

    Args:
        model: The network; put in eval mode.
        output_file: Target ``.mlpackage`` folder; an existing one is an error unless ``overwrite``.
        input_size: C x H x W of the model's input.
        batch_size: Batch of the model's input.
        overwrite: Replace an existing ``output_file``.
        validate_input: Check ``input_size`` against the network's channels and strides (``check_input``).

    Returns:
        The path written; its input is ``input0`` (B x C x H x W float32), its output ``output0``.
    """
    require('coremltools', 'mobile')
    import shutil
    import coremltools as ct
    path = output_path(output_file, overwrite)
    if path.suffix != '.mlpackage':
        raise ValueError(f'Core ML writes an .mlpackage folder; name the output {path.with_suffix(".mlpackage")}.')
    if validate_input:
        check_input(model, (batch_size,) + tuple(input_size))
    example = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,), strict=False).run_decompositions({})
    mlmodel = ct.convert(
        program,
        inputs=[ct.TensorType(name='input0', shape=example.shape)],
        outputs=[ct.TensorType(name='output0')],
        convert_to='mlprogram',
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32,
    )
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(path))
    _check_saved(path, tuple(example.shape))
    return path


def _check_saved(path: Path, input_shape: Tuple[int, ...]) -> None:
    """Read the saved package's spec back (no Core ML runtime needed) and check its input and output."""
    import coremltools as ct
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    inputs = {i.name: tuple(i.type.multiArrayType.shape) for i in spec.description.input}
    outputs = [o.name for o in spec.description.output]
    if inputs != {'input0': input_shape} or outputs != ['output0']:
        raise RuntimeError(f'The saved Core ML package {path} has inputs {inputs} and outputs {outputs}; expected '
                           f'input0 {input_shape} and output0.')
