"""ONNX export with dynamic batch / height / width: onnxruntime matches PyTorch at sizes other than the export size.

Tolerance: max |onnx - torch| <= 1e-4 * max(1, max |torch|) (float32 noise measured: <= 5e-5 relative).
The full model goes through the fast TorchScript exporter (the command, with a checkpoint); the dynamo exporter
(torch's default, ~1.5 min for a full MobileNet on 2 CPU cores) and torch.export are checked on MRAP modules.
"""
import pytest
import torch

import timm
import timm_mrap  # noqa: F401  registers the models
from timm_mrap import MRAP
from timm_mrap.deploy import export_onnx, onnx_parity
from timm_mrap.deploy.__main__ import main as export_main

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

RTOL = 1e-4


def _assert_parity(results):
    for size, (diff, scale) in results.items():
        assert diff <= RTOL * max(1., scale), f'{size}: |onnx - torch| = {diff} at scale {scale}'


def _dynamic_axes(path):
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [bool(d.dim_param) for d in dims]


@pytest.mark.slow  # ~20 s of CPU: a full MobileNet through the exporter
def test_full_model_command_dynamic_batch_and_size(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv2_mrap', num_classes=10).eval()
    checkpoint = tmp_path / 'model.pth'
    torch.save(model.state_dict(), checkpoint)
    out = tmp_path / 'model.onnx'
    export_main(['--model', 'mobilenetv2_mrap', '--checkpoint', str(checkpoint), '--out', str(out),
                 '--img-size', '64', '--exporter', 'torchscript', '--check-sizes', '64', '96'])
    printed = capsys.readouterr().out
    assert printed.count(' ok') == 2 and 'FAIL' not in printed
    assert _dynamic_axes(out) == [True, False, True, True]
    # sizes and batches other than the traced 2 x 3 x 64 x 64, non-square too
    _assert_parity(onnx_parity(model, out, [(64, 64), (80, 48), (40, 40)], batch_size=3))
    _assert_parity(onnx_parity(model, out, [(96, 96)], batch_size=1))

    with pytest.raises(SystemExit) as e:  # never overwrite without the flag
        export_main(['--model', 'mobilenetv2_mrap', '--out', str(out), '--img-size', '64'])
    assert e.value.code == 2 and '--overwrite' in capsys.readouterr().err


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_mrap_module_dynamic_height_width(tmp_path, exporter):
    """MRAP's std reduces over the runtime size in both exporters, not the traced one."""
    torch.manual_seed(0)
    m = MRAP(24, pool_types=('avg', 'std', 'max'), rate=(0.3, 0.5, 0.2)).eval()
    torch.nn.init.normal_(m.spatial_bn.running_mean)
    path = export_onnx(m, tmp_path / 'mrap.onnx', input_size=(24, 12, 12), exporter=exporter, validate_input=False)
    assert _dynamic_axes(path) == [True, False, True, True]
    _assert_parity(onnx_parity(m, path, [(12, 12), (7, 9), (2, 2), (31, 17)], batch_size=3))


def test_torch_export_dynamic_height_width():
    m = MRAP(16).eval()
    x = torch.randn(2, 16, 10, 10)
    auto = torch.export.Dim.AUTO
    program = torch.export.export(m, (x,), dynamic_shapes=({0: auto, 2: auto, 3: auto},))
    for shape in [(2, 16, 10, 10), (3, 16, 5, 13)]:
        y = torch.randn(shape)
        torch.testing.assert_close(program.module()(y), m(y), atol=1e-6, rtol=1e-5)


def test_export_rejects_inputs_too_small_for_the_network(tmp_path):
    model = timm.create_model('mobilenetv3_mrap', num_classes=4)
    with pytest.raises(ValueError, match=r'too small.* 32 x 32'):
        export_onnx(model, tmp_path / 'm.onnx', input_size=(3, 16, 16))
    with pytest.raises(ValueError, match='Unknown exporter'):
        export_onnx(model, tmp_path / 'm.onnx', input_size=(3, 64, 64), exporter='tensorrt')
    assert not (tmp_path / 'm.onnx').exists()


def test_exported_mrap_has_few_full_size_operations(tmp_path):
    """The exported module takes its statistics by pooling / 1x1 conv means of x and of the squared deviations (two
    full-size subtractions and squares, no L2-norm reduction) and gates it in four full-size element-wise ops: the
    outer product, sigmoid, 1 + and the scaling."""
    m = MRAP(32).eval()
    path = export_onnx(m, tmp_path / 'mrap.onnx', input_size=(32, 10, 10), exporter='torchscript',
                       dynamic_size=False, validate_input=False)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    full_size = [n.op_type for n in model.graph.node  # Cast to the same type is a no-op onnxruntime removes
                 if shapes.get(n.output[0], [None])[1:] == [32, 10, 10] and n.op_type != 'Cast']
    assert sorted(full_size) == ['Add', 'Mul', 'Mul', 'Mul', 'Mul', 'Sigmoid', 'Sub', 'Sub'], full_size
    assert 'ReduceL2' not in {n.op_type for n in model.graph.node}
    _assert_parity(onnx_parity(m, path, [(10, 10)], batch_size=2))


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_command_checks_the_dynamic_export_from_1x1_maps_to_twice_its_size(tmp_path, capsys, monkeypatch, exporter):
    """Without flags the command compares onnxruntime with PyTorch at 32 px (1 x 1 final maps, where MRAP's std is of
    one element), at the export size and at twice it; --no-check skips that."""
    monkeypatch.chdir(tmp_path)
    args = ['--model', 'mobilenetv3_small_mrap', '--num-classes', '10', '--img-size', '64', '--exporter', exporter]
    export_main(args)
    printed = capsys.readouterr().out
    assert (tmp_path / 'mobilenetv3_small_mrap.onnx').exists()
    for size in (32, 64, 128):
        assert f'{size} x {size}: max |onnx - torch|' in printed, printed
    assert printed.count(' ok') == 3 and 'nan' not in printed.lower()
    export_main(args + ['--out', 'other.onnx', '--no-check'])
    assert 'max |onnx - torch|' not in capsys.readouterr().out


def test_exported_std_does_not_cancel_on_large_means(tmp_path):
    """Activations whose mean is large against their spread: the exported two-pass std stays at float32 noise, where a
    one-pass E[x * x] - E[x] ** 2 loses most of its digits."""
    import onnxruntime
    torch.manual_seed(0)
    m = MRAP(32).eval()
    x = 50. + 0.1 * torch.randn(2, 32, 12, 12)
    path = export_onnx(m, tmp_path / 'mrap.onnx', input_size=(32, 12, 12), exporter='torchscript',
                       validate_input=False)
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = torch.from_numpy(session.run(None, {'input0': x.numpy()})[0])
    with torch.no_grad():
        expected = m(x)
        stats_c, stats_s = m.statistics(x)
        one_pass_std = (x.square().mean((2, 3)) - x.mean((2, 3)).square()).clamp_min(0).mul(144 / 143).sqrt()
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    torch.testing.assert_close(stats_c[1], x.std((2, 3)), rtol=1e-4, atol=1e-6)
    assert (one_pass_std - x.std((2, 3))).abs().max() > 100 * (stats_c[1] - x.std((2, 3))).abs().max()
