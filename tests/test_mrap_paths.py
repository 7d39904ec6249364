"""MRAP on every path against a float64 oracle: one matrix of paths x inputs, outputs and gradients.

The oracle is the reference math in float64 on the same input values. Compared: the attention term ``MRAP(x) - x``
(the output is dominated by ``x``, which every path reproduces exactly), the input gradient and the gradient of every
parameter of ``sum(MRAP(x) * probe)`` in training mode, wherever the path has gradients (ONNX and ExecuTorch run
inference: eval mode, output only). Each error is ``max |got - oracle| / max |oracle|`` for that tensor.

Run ``python tests/test_mrap_paths.py`` to print the table of measured errors (``docs/performance.md`` has it).
"""
import os
import sys
from functools import lru_cache
from typing import Callable, Dict, List, Optional

import pytest
import torch

import timm_mrap  # noqa: F401
from timm_mrap import MRAP

from conftest import DEVICE

# eager, compiled and scripted paths run here (CUDA on a GPU machine: Triton kernels, tools/gpu_check.sh); ONNX and
# ExecuTorch run on CPU; the oracle always runs on CPU
CHANNELS = 32
# largest error allowed, relative to the oracle's largest value: (output, input gradient, parameter gradients) per
# input dtype. Parameter gradients include the spatial BN's, which at 1 x 1 maps normalise over two values (ill
# conditioned: it magnifies the statistics' rounding, to 4e-4 in float32 on CUDA); bf16 runs the perceptron and the
# spatial conv in bf16 under autocast. Measured: docs/performance.md.
BOUNDS = {
    torch.float64: (1e-13, 1e-13, 1e-11),
    torch.float32: (5e-6, 2e-5, 1e-3),
    torch.float16: (3e-3, 3e-3, 5e-2),  # one fp16 rounding of the output (11 bits), float32 statistics
    torch.bfloat16: (6e-2, 6e-2, 3e-1),  # one bf16 rounding of the output (8 bits), float32 statistics
}
KINDS = ('output', 'input grad', 'parameter grads')


def make_input(name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The inputs of the matrix: activations a network hands MRAP, including the ones that break one-pass formulas."""
    g = torch.Generator().manual_seed(0)
    shape = {'map_1x1': (2, CHANNELS, 1, 1), 'map_2x2': (2, CHANNELS, 2, 2), 'map_16x16': (2, CHANNELS, 16, 16),
             'batch_1': (1, CHANNELS, 6, 6)}.get(name, (2, CHANNELS, 8, 8))
    x = torch.randn(shape, generator=g)
    if name == 'relu6_saturated':  # ReLU6 outputs with saturated channels: exactly 6, or 6 + 1e-3 noise
        x = (x * 3 + 3).clamp(0, 6)
        x[:, :8] = 6.
        x[:, 8:16] = 6. + 1e-3 * torch.rand(x[:, 8:16].shape, generator=g)
    elif name == 'mean_300':  # not centred: a one-pass E[x * x] - E[x] ** 2 cancels
        x = x + 300.
    elif name == 'constant_rows':  # constant channels (all 0 after ReLU, or 2.5) and positions constant over channels
        x = torch.relu(x)
        x[:, :4] = 0.
        x[:, 4:8] = 2.5
        x[:, :, 3, :] = 1.
    else:
        x = torch.relu(x * 2 + 0.5)
    if name == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(dtype)


# the dynamic ONNX export is made at 8 x 8 and run from 1 x 1 to twice its size
INPUTS = ['relu6_saturated', 'mean_300', 'constant_rows', 'map_1x1', 'map_2x2', 'map_16x16', 'channels_last', 'batch_1']


def make_module() -> MRAP:
    """An MRAP with all three statistics, 8 hidden units and non-trivial spatial BN statistics and affine."""
    torch.manual_seed(0)
    m = MRAP(CHANNELS, rd_ratio=1. / 4, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2))
    with torch.no_grad():
        m.spatial_bn.running_mean.fill_(0.3)
        m.spatial_bn.running_var.fill_(2.)
        m.spatial_bn.weight.fill_(1.5)
        m.spatial_bn.bias.fill_(-0.2)
    return m


def _with_impl(impl: str) -> MRAP:
    m = make_module()
    m.impl = impl
    return m


def run_eager(module: Callable, x: torch.Tensor, train: bool, params: Dict[str, torch.Tensor]):
    """Attention term, and in training the input and parameter gradients of ``sum(module(x) * probe)``."""
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(x.device)
    x = x.detach().clone().requires_grad_(train)
    with torch.set_grad_enabled(train):
        out = module(x)
        term = (out.detach().double() - x.detach().double()).cpu()
        if not train:
            return {'output': term}
        (out.to(probe.dtype) * probe).sum().backward()
    return {'output': term, 'input grad': x.grad.double().cpu(),
            **{f'{n} grad': p.grad.double().cpu() for n, p in params.items()}}


def oracle(x: torch.Tensor, train: bool) -> Dict[str, torch.Tensor]:
    """The reference math in float64 on the values of ``x``."""
    m = _with_impl('reference').double().train(train)
    return run_eager(m, x.double(), train, dict(m.named_parameters()))


def _eager_path(impl: str):
    def run(x, train, autocast: Optional[torch.dtype] = None):
        m = _with_impl(impl).to(DEVICE, torch.float64 if x.dtype == torch.float64 else torch.float32).train(train)
        with torch.autocast(DEVICE, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            return run_eager(m, x.to(DEVICE), train, dict(m.named_parameters()))
    return run


@lru_cache(maxsize=None)
def _compiled(train: bool):
    m = make_module().to(DEVICE).train(train)
    return m, torch.compile(m, fullgraph=True)


def _compile_path(x, train, autocast=None):
    m, compiled = _compiled(train)
    m.zero_grad(set_to_none=True)
    return run_eager(compiled, x.to(DEVICE), train, dict(m.named_parameters()))


def _torchscript_path(x, train, autocast=None):
    m = make_module().to(DEVICE, x.dtype).train(train)
    return run_eager(torch.jit.script(m), x.to(DEVICE), train, dict(m.named_parameters()))


@lru_cache(maxsize=None)
def _onnx_session(folder: str):
    from timm_mrap.deploy import export_onnx
    import onnxruntime
    path = export_onnx(make_module(), os.path.join(folder, 'mrap.onnx'), input_size=(CHANNELS, 8, 8),
                       validate_input=False)  # the default export: dynamo, dynamic batch and size, made at 8 x 8
    return onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def _onnx_path(folder):
    def run(x, train, autocast=None):
        session = _onnx_session(folder)
        out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.contiguous().numpy()})[0])
        return {'output': out.double() - x.double()}
    return run


def _executorch_path(x, train, autocast=None):
    from executorch.runtime import Runtime
    from timm_mrap.deploy.executorch import executorch_program
    buffer = executorch_program(make_module().eval(), x.contiguous(), channels_last=False)
    out = Runtime.get().load_program(buffer).load_method('forward').execute([x.contiguous()])[0]
    return {'output': out.double() - x.double()}


def _triton_path(x, train, autocast=None):
    from timm_mrap.layers.mrap_triton import triton_available
    if not triton_available():
        pytest.skip('Triton needs a CUDA device or TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU)')
    return _eager_path('triton')(x, train, autocast)


PATHS = ['reference', 'fused', 'triton', 'compile', 'torchscript', 'onnxruntime', 'executorch']
INFERENCE_ONLY = ('onnxruntime', 'executorch')
REQUIRES = {'triton': 'triton', 'onnxruntime': 'onnxruntime', 'executorch': 'executorch'}


def path_runner(path: str, folder: str) -> Callable:
    return {
        'reference': _eager_path('reference'), 'fused': _eager_path('fused'), 'triton': _triton_path,
        'compile': _compile_path, 'torchscript': _torchscript_path, 'onnxruntime': _onnx_path(folder),
        'executorch': _executorch_path,
    }[path]


def errors(path: str, name: str, folder: str, dtype: torch.dtype = torch.float32) -> Dict[str, float]:
    """Relative error of ``path`` on input ``name`` against the float64 oracle: the output, the input gradient and the
    worst parameter gradient (``KINDS``)."""
    train = path not in INFERENCE_ONLY
    x = make_input(name, dtype)
    truth = oracle(x, train)
    got = path_runner(path, folder)(x, train, torch.bfloat16 if dtype == torch.bfloat16 else None)
    assert set(got) == set(truth)
    assert torch.isfinite(got['output']).all()
    assert all(t.abs().max() > 0 for t in truth.values()), 'every compared tensor of the oracle is non-zero'
    rel = {k: ((got[k] - truth[k]).abs().max() / truth[k].abs().max()).item() for k in truth}
    out = {'output': rel.pop('output')}
    if train:
        out['input grad'] = rel.pop('input grad')
        out['parameter grads'] = max(rel.values())
    return out


def _check(errs: Dict[str, float], dtype: torch.dtype) -> None:
    bounds = dict(zip(KINDS, BOUNDS[dtype]))
    over = {k: f'{v:.1e} > {bounds[k]:.0e}' for k, v in errs.items() if not v <= bounds[k]}
    assert not over, over


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('mrap_paths'))


@pytest.mark.parametrize('name', INPUTS)
@pytest.mark.parametrize('path', PATHS)
def test_float32_path_matches_float64_oracle(path, name, folder):
    if path in REQUIRES:
        pytest.importorskip(REQUIRES[path])
    _check(errors(path, name, folder), torch.float32)


@pytest.mark.parametrize('name', INPUTS)
@pytest.mark.parametrize('path', ['reference', 'fused', 'torchscript'])
def test_float64_path_matches_float64_oracle(path, name, folder):
    _check(errors(path, name, folder, torch.float64), torch.float64)


@pytest.mark.parametrize('name', ['relu6_saturated', 'mean_300', 'map_1x1', 'channels_last'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
@pytest.mark.parametrize('path', ['reference', 'fused', 'triton'])
def test_low_precision_path_matches_float64_oracle(path, dtype, name, folder):
    """bf16 under autocast (as AMP runs it), fp16 as input dtype; statistics stay float32 on every path."""
    if path in REQUIRES:
        pytest.importorskip(REQUIRES[path])
    _check(errors(path, name, folder, dtype), dtype)


def error_table(folder: str) -> List[str]:
    """Markdown rows: the errors (output / input gradient / worst parameter gradient) of each path on each input."""
    rows = ['| path | dtype | ' + ' | '.join(INPUTS) + ' |', '|---|---|' + '---:|' * len(INPUTS)]
    cases = [(p, torch.float32) for p in PATHS] + [(p, torch.float64) for p in ('reference', 'fused', 'torchscript')]
    cases += [(p, d) for d in (torch.float16, torch.bfloat16) for p in ('reference', 'fused', 'triton')]
    for path, dtype in cases:
        cells = []
        for name in INPUTS:
            try:
                cells.append(' / '.join(f'{v:.0e}' for v in errors(path, name, folder, dtype).values()))
            except Exception as e:  # noqa: BLE001  a path this machine lacks is shown, not hidden
                cells.append(type(e).__name__)
        rows.append(f'| {path} | {str(dtype).replace("torch.", "")} | ' + ' | '.join(cells) + ' |')
    return rows


if __name__ == '__main__':
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        print('\n'.join(error_table(tmp)))
    sys.exit(0)
