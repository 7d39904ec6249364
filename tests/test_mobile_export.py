"""Phone runtimes: ExecuTorch (XNNPACK, fp32 and int8), Core ML and LiteRT through ``python -m timm_mrap.deploy``.

The networks are V3-Small at 64 px (the smallest registered model; a lowering takes 10-40 s on 2 CPU cores). The
ExecuTorch programs run in ExecuTorch's own runtime here; Core ML converts only (its runtime is Apple-only); LiteRT
runs where litert-torch installs (its own environment: it pins typing-extensions below this project's constraints).
"""
import importlib.util
import re

import pytest
import torch

import timm
import timm_mrap  # noqa: F401  registers the models
from timm_mrap import MRAP
from timm_mrap.deploy import calibration_batches, export_model
from timm_mrap.deploy.executorch import BlockedSpatialConv, block_spatial_convs
from timm_mrap.layers import MAFC
from timm_mrap.errors import MissingExtraError
from timm_mrap.deploy.__main__ import main as export_main

from conftest import ROOT, load_script

pytest.importorskip('executorch', reason='the mobile extra (executorch) is part of the test extra')

MODEL_ARGS = ['--model', 'mobilenetv3_small_mrap', '--num-classes', '10', '--img-size', '64']


def _lowered(module: torch.nn.Module, x: torch.Tensor, **kwargs):
    """(ExecuTorch's delegation report, [(op name, output shape) of every node the XNNPACK delegate did not take])."""
    from executorch.devtools.backend_debug import get_delegation_info
    from timm_mrap.deploy.executorch import lower_executorch
    graph_module = lower_executorch(module, x, **kwargs).exported_program().graph_module
    out = []
    for node in graph_module.graph.nodes:
        if node.op == 'call_function' and 'executorch_call_delegate' not in str(node.target) \
                and node.target.__name__ != 'getitem':
            val = node.meta.get('val')
            out.append((str(node.target).split('.')[-2] if '.' in str(node.target) else str(node.target),
                        tuple(val.shape) if isinstance(val, torch.Tensor) else None))
    return get_delegation_info(graph_module), out


@pytest.mark.parametrize('channels_last', [True, False])
def test_exported_mrap_leaves_the_delegate_only_for_the_sort(channels_last):
    """Every op of MRAP but the top-n sort of the C-length statistics runs in XNNPACK: no view of the statistics, no
    where / gt guard, no gather, no conv with computed weights outside; one partition before the sort, one after."""
    m = MRAP(32).eval()
    x = torch.randn(1, 32, 10, 10)
    report, outside = _lowered(m, x, channels_last=channels_last)
    ops = [op for op, _ in outside if op != '_clone_dim_order']  # the channels-last copy of the program's input
    assert ops == ['topk', 'topk'], outside
    assert report.num_delegated_subgraphs == 2, report.get_summary()


@pytest.mark.parametrize('channels_last', [True, False])
def test_exported_mafc_runs_whole_in_the_delegate(channels_last):
    """MAFC has no sort: its means and stds over H x W and over C (1x1 convolutions with constant weights) and both
    gates are one XNNPACK partition, nothing outside."""
    report, outside = _lowered(MAFC(32).eval(), torch.randn(1, 32, 12, 12), channels_last=channels_last)
    assert [op for op, _ in outside if op != '_clone_dim_order'] == [], outside
    assert report.num_delegated_subgraphs == 1, report.get_summary()


def test_exported_network_has_one_partition_per_sort_boundary():
    """A network with k MRAP modules is k + 1 delegate calls with only the 2k sorts between them, classifier pooling
    included (mobilenetv2_mrap: 17 modules, 18 partitions)."""
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), MRAP(16), nn.Conv2d(16, 24, 3, stride=2, padding=1), MRAP(24),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10)).eval()
    report, outside = _lowered(net, torch.randn(1, 3, 16, 16))
    assert report.num_delegated_subgraphs == 3, report.get_summary()
    assert sorted(op for op, _ in outside) == ['_clone_dim_order'] + ['topk'] * 4, outside


@pytest.mark.parametrize('variant,outside_ops,partitions', [('NoSortMRAP', [], 1), ('CutOnlyMRAP', ['flip'] * 2, 2)])
def test_floor_variants_cut_the_delegate_as_they_claim(variant, outside_ops, partitions):
    """The floor tool's variants measure what its docs say: ``nosort`` is one partition with nothing outside,
    ``cutonly`` has MRAP's cuts (two partitions a module) with a reversal where MRAP sorts."""
    m = MRAP(32).eval()
    m.__class__ = getattr(load_script(ROOT / 'tools' / 'executorch_floor.py'), variant)
    report, outside = _lowered(m, torch.randn(1, 32, 10, 10))
    assert [op for op, _ in outside if op != '_clone_dim_order'] == outside_ops, outside
    assert report.num_delegated_subgraphs == partitions, report.get_summary()


@pytest.mark.parametrize('layer,kernel_size', [(MRAP, 7), (MRAP, 9), (MAFC, 7), (MAFC, 3)])
def test_blocked_spatial_conv_is_the_convolution_and_batch_norm(layer, kernel_size):
    """ExecuTorch programs take the spatial convolution + batch norm of MRAP / MAFC on 4 x 4 space-to-depth blocks:
    the same output (float64), on sides that are multiples of 4 and on sides that are not (the plain convolution);
    the module passed in keeps its own layers."""
    torch.manual_seed(0)
    attn = layer(16, spatial_kernel_size=kernel_size).double().eval()
    with torch.no_grad():
        attn.spatial_bn.running_mean.fill_(0.4)
        attn.spatial_bn.running_var.fill_(2.5)
        attn.spatial_bn.weight.fill_(1.5)
        attn.spatial_bn.bias.fill_(-0.3)
    blocked = block_spatial_convs(attn)
    assert isinstance(blocked.spatial_conv, BlockedSpatialConv) and isinstance(blocked.spatial_bn, torch.nn.Identity)
    assert isinstance(attn.spatial_conv, torch.nn.Conv2d) and isinstance(attn.spatial_bn, torch.nn.BatchNorm2d)
    for size in [(16, 12), (8, 8), (7, 7), (14, 10)]:
        x = torch.randn(2, 16, *size, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(blocked(x), attn(x), rtol=0, atol=1e-12)
        maps = list(torch.randn(2, 2, *size, dtype=torch.float64).split(1, dim=1))
        with torch.no_grad():
            expected = attn.spatial_bn(attn.spatial_conv(torch.cat(maps, dim=1)))
            torch.testing.assert_close(blocked.spatial_conv(maps), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('blocked', [False, True])
def test_int8_rounds_only_the_statistics_that_share_a_scale(blocked):
    """In int8 programs MRAP computes in float32 but for its mean over C, an int8 1x1 convolution of the block's int8
    activation, and what XNNPACK's quantizer gives a scale whatever the module: the mean over H x W (its input's
    scale) and the spatial mean and std maps where they are concatenated for the spatial convolution (the maps, or
    their 4 x 4 blocks in the blocked convolution). Centring, squares, the variance over C, perceptron, sigmoids and
    gate stay float; the module's output is quantized for the next convolution."""
    from timm_mrap.deploy.executorch import _quantize_int8
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU6(), MRAP(16),
                              torch.nn.Conv2d(16, 8, 1)).eval()
    net = block_spatial_convs(net) if blocked else net
    x = torch.randn(1, 3, 16, 16)
    graph = _quantize_int8(net, x, [x]).graph
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default
    rounded = sorted(n.args[0].target.__name__ for n in graph.nodes
                     if n.target == quantize and n.args[0].op == 'call_function')
    # two network convolutions, ReLU6, MRAP's output (add), the flattened mean over H x W, the mean over C (a 1x1
    # convolution), and what is concatenated: the spatial mean map (that convolution) and std map (sqrt), or the two
    # blocked maps (reshapes; the int8 mean map's rearrangement into blocks keeps its scale: the same values)
    maps = ['reshape.default'] * 3 + ['permute.default'] if blocked else ['sqrt.default']
    assert rounded == sorted(['add.Tensor', 'cat.default', 'conv2d.default', 'conv2d.default', 'conv2d.default',
                              'flatten.using_ints', 'hardtanh.default', 'mean.dim'] + maps), rounded
    # int8 convolutions take a dequantized weight: the network's two and MRAP's mean over C; the variance over C and
    # the spatial convolution keep their float weights
    convs = [n for n in graph.nodes if n.target == torch.ops.aten.conv2d.default]
    float_weights = sorted(str(n.args[1].target).rsplit('.', 1)[-1] for n in convs if n.args[1].op == 'get_attr')
    assert len(convs) == 5 and float_weights == sorted(['channel_variance', 'blocked_weight' if blocked else 'weight'])


def test_exported_mrap_with_max_pool_keeps_only_the_maxima_outside():
    """With the max statistic, the maxima (amax over H x W and over C) are the full-size reductions XNNPACK does not
    take; everything else stays in the delegate."""
    m = MRAP(32, pool_types=('avg', 'std', 'max')).eval()
    ops = {op for op, _ in _lowered(m, torch.randn(1, 32, 10, 10), channels_last=False)[1]}
    assert ops <= {'topk', 'amax'}, ops


@pytest.mark.slow  # one lowering of a small network, ~30 s
def test_executorch_fp32_command_matches_pytorch(tmp_path, capsys):
    out = tmp_path / 'm.pte'
    export_main(MODEL_ARGS + ['--format', 'executorch', '--out', str(out)])
    printed = capsys.readouterr().out
    assert out.stat().st_size > 1e6
    assert 'Wrote' in printed and '64 x 64: max |executorch - torch|' in printed and ' ok' in printed


@pytest.mark.slow  # quantization, calibration and lowering of a small network, ~70 s
def test_executorch_int8_calibrated_on_images(tmp_path, capsys):
    """int8 from real images with the model's preprocessing, through the command: the program is a fraction of the
    fp32 weights' size, runs in ExecuTorch's runtime, stays close to the float network on the calibration images, and
    its top-1 is reported beside PyTorch's, with no warning per image read."""
    from timm_mrap.deploy.executorch import load_executorch
    from timm_mrap.training.datasets import write_digits_imagefolder
    write_digits_imagefolder(str(tmp_path / 'digits'), size=32)
    for image in sorted((tmp_path / 'digits' / 'validation').glob('*/*.png'))[::2]:  # top-1 of 180 images is enough
        image.unlink()
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv3_small_mrap', num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / 'weights.pth')
    batches = calibration_batches(model, str(tmp_path / 'digits' / 'train'), count=8, img_size=64)
    assert len(batches) == 8 and batches[0].shape == (1, 3, 64, 64)

    export_main(MODEL_ARGS + ['--checkpoint', str(tmp_path / 'weights.pth'), '--format', 'executorch', '--int8',
                              '--calibration-dir', str(tmp_path / 'digits' / 'train'), '--calibration-count', '8',
                              '--out', str(tmp_path / 'int8.pte'),
                              '--eval-dir', str(tmp_path / 'digits' / 'validation')])
    printed, warned = capsys.readouterr()
    assert 'Calibrating on 8 images' in printed and 'int8, reported' in printed
    assert 'ResourceWarning' not in warned, warned
    top1 = re.search(r'Top-1 on .*: pytorch ([\d.]+)%, executorch int8 ([\d.]+)%', printed)
    assert top1, printed
    assert all(0 <= float(v) <= 100 for v in top1.groups())

    int8 = tmp_path / 'int8.pte'
    fp32_weights = 4 * sum(p.numel() for p in model.parameters())  # an fp32 program is at least its weights
    assert int8.stat().st_size < 0.5 * fp32_weights
    predict = load_executorch(str(int8))
    with torch.no_grad():
        expected = torch.cat([model(b) for b in batches[:4]])
    got = torch.cat([predict(b) for b in batches[:4]])
    assert torch.isfinite(got).all()
    assert (got - expected).norm() / expected.norm() < 0.3


@pytest.mark.slow  # conversion of a small network, ~25 s
def test_coreml_conversion(tmp_path, capsys):
    pytest.importorskip('coremltools')
    import coremltools as ct
    out = tmp_path / 'm.mlpackage'
    export_main(MODEL_ARGS + ['--format', 'coreml', '--out', str(out)])
    spec = ct.models.MLModel(str(out), skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == ['input0']
    assert tuple(spec.description.input[0].type.multiArrayType.shape) == (1, 3, 64, 64)
    assert 'Not checked: Core ML models run on Apple platforms only' in capsys.readouterr().out


def test_missing_executorch_names_the_extra(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'executorch'
                        else real_find_spec(name, *a))
    model = timm.create_model('mobilenetv3_small_mrap', num_classes=10)
    with pytest.raises(MissingExtraError, match=r'pip install "timm-mrap\[mobile\]"'):
        export_model(model, 'executorch', str(tmp_path / 'm.pte'), (3, 64, 64))


@pytest.mark.parametrize('argv, message', [
    (['--format', 'tensorrt'], 'invalid choice'),
    (['--format', 'onnx', '--int8'], '--format executorch'),
    (['--format', 'coreml', '--static-size'], 'ONNX options'),
    (['--format', 'executorch', '--img-size', '16'], 'too small'),
    (['--format', 'coreml', '--out', 'm.onnx'], '.mlpackage'),
    (['--format', 'executorch', '--int8', '--calibration-dir', 'no/such/folder'], 'does not exist'),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        export_main(['--model', 'mobilenetv3_small_mrap', '--num-classes', '10', '--img-size', '64'] + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    out = tmp_path / 'm.pte'
    out.write_bytes(b'user data')
    with pytest.raises(SystemExit):
        export_main(MODEL_ARGS + ['--format', 'executorch', '--out', str(out)])
    assert 'pass --overwrite' in capsys.readouterr().err
    assert out.read_bytes() == b'user data'


def test_calibration_folder_without_images(tmp_path):
    (tmp_path / 'empty').mkdir()
    model = timm.create_model('mobilenetv3_small_mrap', num_classes=10)
    with pytest.raises(ValueError, match='no images'):
        calibration_batches(model, str(tmp_path / 'empty'))


def test_calibration_follows_timms_split_rule(tmp_path):
    """The parent of a train/ split calibrates on train/ only (timm's create_dataset split search)."""
    from PIL import Image
    for split, count in (('train', 3), ('validation', 5)):
        (tmp_path / split / 'a').mkdir(parents=True)
        for i in range(count):
            Image.new('RGB', (40, 40), (50 * i, 0, 0)).save(tmp_path / split / 'a' / f'{i}.png')
    model = timm.create_model('mobilenetv3_small_mrap', num_classes=2)
    batches = calibration_batches(model, str(tmp_path), count=64, batch_size=2, img_size=32)
    assert [b.shape for b in batches] == [(2, 3, 32, 32)]  # 3 training images: one full batch of 2


def test_int8_without_calibration_warns(tmp_path):
    """Random calibration is allowed for a quick look, with a warning that accuracy needs real images."""
    from timm_mrap.deploy.executorch import lower_executorch
    with pytest.warns(UserWarning, match='random inputs'):
        lower_executorch(MRAP(16).eval(), torch.randn(1, 16, 8, 8), int8=True)


def test_channels_last_fallback_says_so():
    """CBAM's amax runs on NCHW tensors only in ExecuTorch's portable kernels: the channels-last program does not run,
    and the NCHW program that replaces it comes with a one-line warning."""
    from timm.layers.cbam import CbamModule
    from timm_mrap.deploy.executorch import executorch_program
    with pytest.warns(UserWarning, match='NCHW') as record:
        executorch_program(CbamModule(16).eval(), torch.randn(1, 16, 8, 8))
    fallback = [str(w.message) for w in record if 'NCHW' in str(w.message)]
    assert len(fallback) == 1 and '\n' not in fallback[0]


@pytest.mark.slow  # two lowerings of a small network, ~50 s
def test_export_warnings_reach_the_user(tmp_path, capsys):
    out = tmp_path / 'cbam.pte'
    export_main(MODEL_ARGS + ['--model-kwargs', 'attn=cbam', '--format', 'executorch', '--out', str(out)])
    captured = capsys.readouterr()
    assert out.exists() and ' ok' in captured.out
    assert [line for line in captured.err.splitlines() if line.startswith('warning:') and 'NCHW' in line]
