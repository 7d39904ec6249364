"""Reference checkpoint conversion: converted networks reproduce the reference logits; bad input is a clear error."""
import json

import pytest
import torch

import timm
from timm_mrap import MRAP
from timm_mrap.convert import ConversionError, convert_checkpoint, fold_data_bn, main
from timm_mrap.layers import config as mrap_config

from conftest import fixture_state_dict, load_fixture

MRAP_NETWORKS = ['mobilenetv1_mrap', 'mobilenetv2_mrap', 'mobilenetv3_mrap']


def _assert_logits_match(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """The fixtures README's rule: float32 noise is ~1e-5 of the logit scale, real mistakes 1e-2 or more."""
    error = (ours - reference).abs().max().item()
    assert error <= 1e-4 * max(1., reference.abs().max().item()), f'max |ours - reference| = {error:.3g}'


@pytest.fixture(scope='module', params=MRAP_NETWORKS)
def reference_network(request):
    tensors, meta = load_fixture(f'{request.param}_reference')
    return request.param, tensors, meta


@pytest.mark.parametrize('layout', ['model_state_dict', 'state_dict+module', 'bare'])
def test_converted_checkpoint_reproduces_reference_logits(reference_network, layout, tmp_path):
    name, t, meta = reference_network
    state_dict = fixture_state_dict(t)
    if layout == 'model_state_dict':  # MRAP_Dogs.py
        checkpoint, filename = {'model_state_dict': state_dict}, 'model_best.pth'
    elif layout == 'state_dict+module':  # a DataParallel-wrapped checkpoint (MAF checkpoints: see test_mafc.py)
        checkpoint = {'epoch': 3, 'state_dict': {'module.' + k: v for k, v in state_dict.items()}}
        filename = 'checkpoint.pth.tar'
    else:
        checkpoint, filename = state_dict, 'bare.pth'
    torch.save(checkpoint, tmp_path / filename)

    out = tmp_path / 'converted'
    convert_checkpoint(str(tmp_path / filename), name, str(out))
    assert sorted(p.name for p in out.iterdir()) == ['config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == name and config['num_classes'] == int(meta['num_classes'])
    assert 'model_args' not in config  # timm's shape: classes top-level, no architecture argument to pass

    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    cfg = model.pretrained_cfg
    mean, std = torch.tensor(cfg['mean']).view(1, 3, 1, 1), torch.tensor(cfg['std']).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((t['input'] - mean) / std)
    _assert_logits_match(logits, t['logits'])


@pytest.mark.parametrize('impl', ['reference', 'fused', 'triton'])
def test_every_mrap_impl_reproduces_reference_logits(reference_network, impl, tmp_path, monkeypatch):
    """The fused path and the reference ops on every network; Triton (through its interpreter on CPU, slow) on V3."""
    name, t, _ = reference_network
    if impl == 'triton' and name != 'mobilenetv3_mrap' and not torch.cuda.is_available():
        pytest.skip('the Triton interpreter takes about 20 s per V1 / V2 network; V3 covers its kernels')
    torch.save(fixture_state_dict(t), tmp_path / 'ref.pth')
    convert_checkpoint(str(tmp_path / 'ref.pth'), name, str(tmp_path / 'converted'))
    monkeypatch.setattr(mrap_config, '_MRAP_IMPL', impl)  # the switch: TIMM_MRAP_IMPL / set_mrap_impl
    model = timm.create_model(f'local-dir:{tmp_path / "converted"}', pretrained=True).eval()
    assert {m.impl for m in model.modules() if isinstance(m, MRAP)} == {impl}
    cfg = model.pretrained_cfg
    mean, std = torch.tensor(cfg['mean']).view(1, 3, 1, 1), torch.tensor(cfg['std']).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((t['input'] - mean) / std)
    _assert_logits_match(logits, t['logits'])


def test_tolerance_separates_real_mistakes(reference_network, tmp_path):
    """Guard on the check itself: dropping MRAP's residual sigmoid must fail the logit comparison."""
    name, t, _ = reference_network
    torch.save(fixture_state_dict(t), tmp_path / 'ref.pth')
    model = convert_checkpoint(str(tmp_path / 'ref.pth'), name)
    cfg = model.pretrained_cfg
    x = (t['input'] - torch.tensor(cfg['mean']).view(1, 3, 1, 1)) / torch.tensor(cfg['std']).view(1, 3, 1, 1)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, 'spatial_bn'):
                m.spatial_bn.bias.add_(0.5)
        broken = model(x)
    with pytest.raises(AssertionError):
        _assert_logits_match(broken, t['logits'])


def test_fold_data_bn_equals_the_batchnorm():
    t, _ = load_fixture('mobilenetv2_mrap_reference')
    sd = fixture_state_dict(t)
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.load_state_dict({k[len('backbone.data_bn.'):]: v for k, v in sd.items() if k.startswith('backbone.data_bn.')})
    mean, std = fold_data_bn(sd)
    x = t['input']
    folded = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(folded, bn(x), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope='module')
def v2_checkpoint(tmp_path_factory):
    t, _ = load_fixture('mobilenetv2_mrap_reference')
    path = tmp_path_factory.mktemp('ref') / 'model_best.pth'
    torch.save({'model_state_dict': fixture_state_dict(t)}, path)
    return path


def test_cli_writes_folder_and_refuses_to_overwrite(v2_checkpoint, tmp_path, capsys):
    out = tmp_path / 'out'
    main([str(v2_checkpoint), '--model', 'mobilenetv2_mrap', '--out', str(out)])
    assert 'local-dir:' in capsys.readouterr().out
    before = (out / 'model.safetensors').stat().st_mtime_ns
    with pytest.raises(SystemExit) as e:
        main([str(v2_checkpoint), '--model', 'mobilenetv2_mrap', '--out', str(out)])
    assert e.value.code == 2
    assert '--overwrite' in capsys.readouterr().err
    assert (out / 'model.safetensors').stat().st_mtime_ns == before
    main([str(v2_checkpoint), '--model', 'mobilenetv2_mrap', '--out', str(out), '--overwrite'])


def test_implementation_is_not_a_conversion_argument(v2_checkpoint, tmp_path):
    """How the kernels run is the switch's, not the weights': passing it as a model argument names the switch."""
    with pytest.raises(TypeError, match='switch.*set_mrap_impl.*TIMM_MRAP_IMPL'):
        convert_checkpoint(str(v2_checkpoint), 'mobilenetv2_mrap', str(tmp_path / 'converted'), mrap_impl='triton')
    assert not (tmp_path / 'converted' / 'model.safetensors').exists()


def test_num_classes_is_inferred_and_checked(v2_checkpoint):
    assert convert_checkpoint(str(v2_checkpoint), 'mobilenetv2_mrap').num_classes == 10
    with pytest.raises(ConversionError, match='does not match the checkpoint classifier'):
        convert_checkpoint(str(v2_checkpoint), 'mobilenetv2_mrap', num_classes=100)


def test_wrong_architecture_is_a_clear_error(v2_checkpoint):
    with pytest.raises(ConversionError, match='--model'):
        convert_checkpoint(str(v2_checkpoint), 'mobilenetv3_mrap')
    with pytest.raises(ConversionError, match='--model'):
        convert_checkpoint(str(v2_checkpoint), 'mobilenetv1_mrap')


def test_unknown_key_is_named_not_dropped(tmp_path):
    t, _ = load_fixture('mobilenetv2_mrap_reference')
    sd = fixture_state_dict(t)
    sd['backbone.stage2.unit1.extra_gate.weight'] = torch.zeros(3)
    torch.save(sd, tmp_path / 'extra.pth')
    with pytest.raises(ConversionError, match='extra_gate'):
        convert_checkpoint(str(tmp_path / 'extra.pth'), 'mobilenetv2_mrap')


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(b'PK\x03\x04 not really a checkpoint')
    with pytest.raises(ConversionError, match='Could not read'):
        convert_checkpoint(str(bad), 'mobilenetv2_mrap')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        convert_checkpoint(str(tmp_path / 'nope.pth'), 'mobilenetv2_mrap')
