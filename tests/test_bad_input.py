"""Bad input gets an error that names the problem and the fix: inputs, checkpoints, model arguments; plus a
property-based test of MRAP over shapes, channel counts, pool types and rates."""
import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

import timm
from timm.models import load_checkpoint
import timm_mrap  # noqa: F401  registers the models
from timm_mrap.layers import MRAP, POOL_TYPES
from timm_mrap.convert import ConversionError, convert_checkpoint
from timm_mrap.checkpoint import load_model
from timm_mrap.deploy import check_input
from timm_mrap.errors import CheckpointError


@pytest.fixture(scope='module')
def model():
    return timm.create_model('mobilenetv2_mrap', num_classes=5).eval()


@pytest.mark.parametrize('shape, message', [
    ((2, 1, 64, 64), r'1 channels but the model expects 3 .*grayscale.*in_chans=1'),
    ((2, 4, 64, 64), r'4 channels but the model expects 3; .*in_chans=4'),
    ((2, 3, 16, 64), r'16 x 64 px, too small for a network of total stride 32.*at least 32 x 32'),
    ((3, 64), r'B x C x H x W.*unsqueeze'),
])
def test_check_input_names_problem_and_fix(model, shape, message):
    with pytest.raises(ValueError, match=message):
        check_input(model, shape)
    check_input(model, (3, 64, 64))  # a single C x H x W image is fine


def test_torch_error_for_wrong_channels_names_the_channels(model):
    """Without the check, torch's own conv error still says what is wrong."""
    with pytest.raises(RuntimeError, match='expected input.*to have 3 channels, but got 1'):
        model(torch.randn(1, 1, 64, 64))


def test_corrupted_checkpoint(model, tmp_path):
    good = tmp_path / 'good.pth'
    torch.save(model.state_dict(), good)
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r'truncated\.pth') as e:
        load_model('mobilenetv2_mrap', str(bad))
    assert e.match('PytorchStreamReader') and e.match('incomplete') and e.match('download it again')
    with pytest.raises(ConversionError, match='Could not read'):
        convert_checkpoint(str(bad), 'mobilenetv2_mrap')
    with pytest.raises(RuntimeError):  # timm's own loader: torch's zip error (documented in the README)
        load_checkpoint(model, str(bad))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_model('mobilenetv2_mrap', str(tmp_path / 'missing.pth'))


class _Opaque:
    """An object torch.load(weights_only=True) refuses to unpickle."""


def test_checkpoint_with_python_objects_names_weights_only(model, tmp_path):
    path = tmp_path / 'pickled.pth'
    torch.save({'state_dict': model.state_dict(), 'extra': _Opaque()}, path)
    with pytest.raises(CheckpointError, match='pickled.pth') as e:
        load_model('mobilenetv2_mrap', str(path))
    assert e.match('weights_only') and e.match('_Opaque') and 'incomplete' not in str(e.value)


def test_wrong_architecture_checkpoint(model, tmp_path):
    path = tmp_path / 'v2.pth'
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match=r'does not fit mobilenetv3_mrap: .*missing keys.*--model'):
        load_model('mobilenetv3_mrap', str(path))
    with pytest.raises(CheckpointError, match=r'missing keys .*se\.conv_expand.*attn'):
        load_model('mobilenetv2_mrap', str(path), attn='se')
    reference = tmp_path / 'reference.pth'
    torch.save({'model_state_dict': {'backbone.init_conv.conv.weight': torch.zeros(1)}}, reference)
    with pytest.raises(CheckpointError, match='timm_mrap.convert'):
        load_model('mobilenetv2_mrap', str(reference), num_classes=5)
    assert load_model('mobilenetv2_mrap', str(path)).num_classes == 5  # the right one loads, classes inferred


@pytest.mark.parametrize('kwargs, problem, fix', [
    (dict(attn='triplet'), 'Unknown attn', 'choose one of .*mrap'),
    (dict(pool_types=('avg', 'median')), r"\['median'\] unknown", 'choose from'),
    (dict(pool_types=('avg',)), 'two or three distinct', r"e\.g\. pool_types="),
    (dict(rate=(0.6, 0.6)), r'sum to 1 \(sum is 1\.2\)', r'e\.g\. rate=\(0\.5, 0\.5\)'),
    (dict(rate=(0.01, 0.99)), r'empty top-n list at \d+ channels', r'each rate must be at least 1 / \d+'),
])
def test_model_argument_errors_name_problem_and_fix(kwargs, problem, fix):
    with pytest.raises(ValueError, match=problem) as e:
        timm.create_model('mobilenetv2_mrap', **kwargs)
    assert e.match(fix)


def test_commands_report_bad_arguments_without_a_traceback(tmp_path, capsys):
    from timm_mrap.deploy.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(['--model', 'mobilenetv2_mrap', '--model-kwargs', 'attn=triplet', '--out', str(tmp_path / 'm.onnx')])
    assert e.value.code == 2 and 'Unknown attn' in capsys.readouterr().err


_POOLS = [p for n in (2, 3) for p in itertools.permutations(POOL_TYPES, n)]


@st.composite
def _mrap_case(draw):
    pools = draw(st.sampled_from(_POOLS))
    channels = draw(st.integers(len(pools), 40))
    # rates: each pool keeps at least one of the C inputs, and they sum to 1
    cuts = sorted(draw(st.lists(st.integers(1, channels - 1), min_size=len(pools) - 1, max_size=len(pools) - 1,
                                unique=True)))
    bounds = [0] + cuts + [channels]
    rate = [(b - a) / channels for a, b in zip(bounds, bounds[1:])]
    rate[-1] = 1. - sum(rate[:-1])
    shape = (draw(st.integers(1, 2)), channels, draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    return pools, tuple(rate), shape, draw(st.integers(0, 2 ** 16)), draw(st.sampled_from(['normal', 'relu', 'zero']))


@settings(max_examples=30, deadline=None)
@given(_mrap_case())
def test_mrap_properties(case):
    """No NaN, same shape, and y = s * x with the scale s in [1, 2] wherever x != 0 (float32 rounding allowed)."""
    pools, rate, shape, seed, kind = case
    torch.manual_seed(seed)
    m = MRAP(shape[1], pool_types=pools, rate=rate)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=2.)  # stress the gates beyond the default init
    m.eval()
    x = torch.randn(shape) * 3
    x = torch.relu(x) if kind == 'relu' else torch.zeros(shape) if kind == 'zero' else x
    y = m(x)
    assert y.shape == x.shape and not torch.isnan(y).any()
    nonzero = x != 0
    assert (y[~nonzero] == 0).all()
    scale = y[nonzero] / x[nonzero]
    assert scale.numel() == 0 or (scale.min() >= 1 - 1e-6 and scale.max() <= 2 + 1e-6)
