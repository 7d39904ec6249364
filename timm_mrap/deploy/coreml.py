""" Core ML export through coremltools (the ``mobile`` extra): an ML program for iOS 17+ / macOS 14+, whose saved
spec is read back and checked (Core ML models run on Apple platforms only)
"""
import shutil
from pathlib import Path

import torch
from torch import nn

from .formats import require

__all__ = ['write_coreml']


def write_coreml(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Convert ``model`` (fp32, static input of ``example``'s shape) to a Core ML ``.mlpackage`` folder at ``path``;
    its input is ``input0`` (B x C x H x W float32), its output ``output0``."""
    require('coremltools', 'mobile')
    import coremltools as ct
    if path.suffix != '.mlpackage':
        raise ValueError(f'Core ML writes an .mlpackage folder; name the output {path.with_suffix(".mlpackage")}.')
    with torch.no_grad():
        program = torch.export.export(model, (example,), strict=False).run_decompositions({})
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
    mlmodel.save(str(path))
    # read the saved package's spec back (no Core ML runtime needed) and check its input and output
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    inputs = {i.name: tuple(i.type.multiArrayType.shape) for i in spec.description.input}
    outputs = [o.name for o in spec.description.output]
    if inputs != {'input0': tuple(example.shape)} or outputs != ['output0']:
        raise RuntimeError(f'The saved Core ML package {path} has inputs {inputs} and outputs {outputs}; expected '
                           f'input0 {tuple(example.shape)} and output0.')
