"""MAFC and the *_mafc models against the reference fixtures, MAF checkpoint conversion, and MAFC's placement."""
import argparse

import pytest
import torch
from torch import nn

import timm
from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, InvertedResidual

from timm_mrap import MAFC
from timm_mrap.checkpoint import is_reference_state_dict, read_checkpoint
from timm_mrap.convert import (
    INPUT_NORMS, ConversionError, convert_checkpoint, convert_state_dict,
    main as convert_main,
)
from timm_mrap.models.mobilenet_mafc import DepthwiseSeparableConvAttnPost, InvertedResidualAttnPost, add_attn_post

from conftest import (
    assert_matches_fixture_eval, assert_matches_fixture_train, attention_from_fixture, fixture_state_dict, load_fixture,
)

MAFC_FIXTURES = ['mafc_c64_h14', 'mafc_c8_h7']
MAFC_MODELS = ['mobilenetv1_mafc', 'mobilenetv2_mafc', 'mobilenetv3_mafc']
ATOL = 1e-5


def _build_mafc(meta):
    assert meta['module'] == 'MAFC'
    return MAFC(int(meta['channels']), rd_ratio=1. / int(meta['reduction_ratio']))


@pytest.mark.parametrize('name', MAFC_FIXTURES)
def test_mafc_matches_reference_eval(name):
    assert_matches_fixture_eval(*attention_from_fixture(name, _build_mafc), atol=ATOL)


@pytest.mark.parametrize('name', MAFC_FIXTURES)
def test_mafc_matches_reference_train_and_gradients(name):
    assert_matches_fixture_train(*attention_from_fixture(name, _build_mafc), atol=ATOL)


def test_mafc_single_elements_and_zero_variance_stay_finite():
    """1 x 1 maps, all-zero channels: the reference's unbiased std is NaN / has NaN gradients there, ours is 0."""
    m = MAFC(16).train()
    x = torch.randn(2, 16, 6, 6)
    x[:, :4] = 0.
    for inp in (x, x[:, :, :1, :1]):
        inp = inp.clone().requires_grad_()
        out = m(inp)
        out.square().sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(inp.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def _save_maf_checkpoint(path, state_dict, attr='cbamm', **save_kwargs):
    """A checkpoint laid out as MAFAttention_main.py saves it: DataParallel prefix, optimizer state, tensor metric."""
    param = nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=1e-4)
    param.grad = torch.ones(3)
    optimizer.step()
    torch.save({
        'epoch': 100,
        'arch': 'MAFCV1',
        'state_dict': {'module.' + k.replace('.cbamm.', f'.{attr}.'): v for k, v in state_dict.items()},
        'best_prec1': torch.tensor(73.128),
        'optimizer': optimizer.state_dict(),
    }, path, **save_kwargs)
    return path


def _logits(model, images):
    cfg = model.pretrained_cfg
    mean, std = (torch.tensor(cfg[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ('mean', 'std'))
    with torch.no_grad():
        return model((images - mean) / std)


def _assert_matches_reference(ours, logits):
    """The fixtures README's rule: float32 noise is ~1e-5 relative, conversion mistakes 1e-2 or more."""
    err = (ours - logits).abs().max().item()
    assert err <= 1e-4 * max(1., logits.abs().max().item()), f'max |ours - reference| = {err:.3g}'


@pytest.mark.parametrize('arch', MAFC_MODELS)
def test_converted_maf_checkpoint_matches_reference_logits(arch, tmp_path):
    """MAF .pth.tar -> Hub folder -> timm.create_model('local-dir:...'), fed through the config's mean / std.

    MAFAttention_main.py normalises with the ImageNet mean / std before data_bn, so the raw image behind the fixture's
    data_bn input is ``input * imagenet_std + imagenet_mean``; the converted config must undo both steps at once.
    """
    t, meta = load_fixture(f'{arch}_reference')
    assert meta['arch'] == arch
    src = _save_maf_checkpoint(tmp_path / 'model_best.pth.tar', fixture_state_dict(t))
    convert_checkpoint(str(src), arch, str(tmp_path / 'out'))
    model = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True).eval()
    assert type(model).__name__.endswith('AttnPost') and model.num_classes == int(meta['num_classes'])
    in_mean, in_std = (torch.tensor(v).view(1, 3, 1, 1) for v in INPUT_NORMS['imagenet'])
    _assert_matches_reference(_logits(model, t['input'] * in_std + in_mean), t['logits'])


def test_both_attention_attribute_names_convert_alike(tmp_path):
    """``cbamm`` (MAF repository) and ``mafc`` (the authors' later files), also from torch's legacy file format."""
    t, _ = load_fixture('mobilenetv1_mafc_reference')
    sd = fixture_state_dict(t)
    models = []
    for attr in ('cbamm', 'mafc'):
        src = _save_maf_checkpoint(tmp_path / f'{attr}.pth.tar', sd, attr=attr, _use_new_zipfile_serialization=False)
        models.append(convert_checkpoint(str(src), 'mobilenetv1_mafc'))
    a, b = (m.state_dict() for m in models)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert models[0].pretrained_cfg['mean'] == models[1].pretrained_cfg['mean']


def test_maf_attention_keys_land_in_attn_post():
    t, _ = load_fixture('mobilenetv2_mafc_reference')
    sd = fixture_state_dict(t)
    converted = convert_state_dict(sd, timm.create_model('mobilenetv2_mafc', num_classes=10))
    for ref_key, ours in [
        ('backbone.stage1.unit1.cbamm.ChannelGate.mlp.1.weight', 'blocks.0.0.attn_post.fc1.weight'),
        ('backbone.stage5.unit4.cbamm.SpatialGate.spatial.bn.running_var',
         'blocks.6.0.attn_post.spatial_bn.running_var'),
        ('backbone.stage4.unit7.cbamm.SpatialGate.spatial.conv.weight', 'blocks.4.2.attn_post.spatial_conv.weight'),
    ]:
        assert torch.equal(converted[ours], sd[ref_key])
    assert not any('.se.' in k for k in converted)


def test_maf_checkpoint_does_not_fit_an_mrap_model(tmp_path):
    t, _ = load_fixture('mobilenetv1_mafc_reference')
    src = _save_maf_checkpoint(tmp_path / 'model_best.pth.tar', fixture_state_dict(t))
    with pytest.raises(ConversionError, match='attn_post'):
        convert_checkpoint(str(src), 'mobilenetv1_mrap')


def test_convert_cli_with_input_norm_none_folds_data_bn_alone(tmp_path, capsys):
    """``--input-norm none``: the folded mean / std reproduce data_bn on the fixture's input as given."""
    t, _ = load_fixture('mobilenetv1_mafc_reference')
    src = _save_maf_checkpoint(tmp_path / 'model_best.pth.tar', fixture_state_dict(t), attr='mafc')
    out = tmp_path / 'converted'
    convert_main([str(src), '--model', 'mobilenetv1_mafc', '--out', str(out), '--input-norm', 'none'])
    assert 'mobilenetv1_mafc, 10 classes' in capsys.readouterr().out
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    _assert_matches_reference(_logits(model, t['input']), t['logits'])
    with pytest.raises(SystemExit):  # never overwrite without --overwrite
        convert_main([str(src), '--model', 'mobilenetv1_mafc', '--out', str(out)])


def test_checkpoint_kinds(tmp_path):
    t, _ = load_fixture('mobilenetv1_mafc_reference')
    sd = fixture_state_dict(t)
    maf = _save_maf_checkpoint(tmp_path / 'maf.pth.tar', sd)
    assert read_checkpoint(str(maf)).kind == 'reference-maf' and read_checkpoint(maf).is_reference
    torch.save({'model_state_dict': sd}, tmp_path / 'mrap.pth')
    assert read_checkpoint(tmp_path / 'mrap.pth').kind == 'reference-mrap'
    assert is_reference_state_dict(sd)
    assert len(read_checkpoint(maf).state_dict) == len(sd)
    timm_sd = timm.create_model('mobilenetv1_mafc', num_classes=10).state_dict()
    assert not is_reference_state_dict(timm_sd)
    torch.save({'state_dict': timm_sd}, tmp_path / 'timm.pth')
    assert read_checkpoint(tmp_path / 'timm.pth').kind == 'timm'
    # timm's train.py pickles its argparse args: the one object the reader allows; not a reference checkpoint
    torch.save({'epoch': 1, 'arch': 'mobilenetv1_mafc', 'state_dict': timm_sd, 'args': argparse.Namespace(lr=0.1)},
               tmp_path / 'train.pth.tar')
    train = read_checkpoint(tmp_path / 'train.pth.tar')
    assert (train.kind, train.arch, train.epoch, train.train_args) == ('timm', 'mobilenetv1_mafc', 1, {'lr': 0.1})
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_checkpoint(tmp_path / 'missing.pth.tar')


@pytest.mark.parametrize('name, count, chs', [
    ('mobilenetv1_mafc', 13, [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]),
    ('mobilenetv2_mafc', 17, [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]),
    ('mobilenetv3_mafc', 8, [40, 40, 40, 112, 112, 160, 160, 160]),
])
def test_mafc_sits_after_the_projection_on_output_channels(name, count, chs):
    model = timm.create_model(name)
    blocks = [b for stage in model.blocks for b in stage]
    post = [b for b in blocks if isinstance(b, (DepthwiseSeparableConvAttnPost, InvertedResidualAttnPost))]
    assert len(post) == count == sum(isinstance(m, MAFC) for m in model.modules())
    assert [b.attn_post.fc2.out_features for b in post] == chs
    assert all(b.attn_post.fc1.in_features == 2 * c and b.attn_post.fc1.out_features == max(1, c // 16)
               for b, c in zip(post, chs))
    assert all(isinstance(b.se, nn.Identity) for b in blocks if not isinstance(b, ConvBnAct))  # nothing before


@pytest.mark.parametrize('name', MAFC_MODELS)
def test_block_applies_mafc_before_the_residual_add(name):
    """Recompute a skip block by hand: shortcut + MAFC(projection block(...)), not MAFC(shortcut + ...)."""
    model = timm.create_model(name).eval()
    block = next(b for stage in model.blocks for b in stage if getattr(b, 'attn_post', None) is not None
                 and b.has_skip)
    x = torch.randn(2, block.conv_dw.in_channels if isinstance(block, DepthwiseSeparableConv)
                    else block.conv_pw.in_channels, 9, 9)
    with torch.no_grad():
        if isinstance(block, InvertedResidual):
            y = block.bn3(block.conv_pwl(block.se(block.bn2(block.conv_dw(block.bn1(block.conv_pw(x)))))))
        else:
            y = block.bn2(block.conv_pw(block.se(block.bn1(block.conv_dw(x)))))
        torch.testing.assert_close(block(x), x + block.attn_post(y))


def test_mobilenetv1_mafc_keeps_the_extra_identity_skips():
    model = timm.create_model('mobilenetv1_mafc')
    skips = [b.has_skip for stage in model.blocks for b in stage]
    assert skips == [False, False, True, False, True, False] + [True] * 5 + [False, True]


def test_mafc_models_share_the_mrap_backbones():
    """Same convs and norms as the *_mrap models; the attention is the only difference."""
    for name in MAFC_MODELS:
        ours = {k for k in timm.create_model(name).state_dict() if '.attn_post.' not in k}
        mrap = {k for k in timm.create_model(name.replace('_mafc', '_mrap')).state_dict() if '.se.' not in k}
        assert ours == mrap, name


def test_attn_mafc_on_an_mrap_backbone_sits_before_the_pointwise_conv():
    model = timm.create_model('mobilenetv2_mrap', attn='mafc')
    block = model.blocks[1][0]
    assert isinstance(block.se, MAFC) and block.se.fc2.out_features == block.conv_pwl.in_channels == 96
    assert not any(isinstance(b, InvertedResidualAttnPost) for stage in model.blocks for b in stage)


def test_features_only_expansion_hooks_still_fire():
    model = timm.create_model('mobilenetv2_mafc', features_only=True, feature_location='expansion').eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == model.feature_info.channels()


@pytest.mark.parametrize('kwargs', [dict(attn='mrap'), dict(pool_types=('avg', 'std')), dict(rate=(0.5, 0.5))])
def test_mafc_models_reject_mrap_options(kwargs):
    with pytest.raises(ValueError, match='mobilenetv2_mrap with attn='):
        timm.create_model('mobilenetv2_mafc', **kwargs)


def test_add_attn_post_names_unsupported_blocks():
    block = ConvBnAct(8, 8, 1)
    with pytest.raises(TypeError, match='DepthwiseSeparableConv and InvertedResidual'):
        add_attn_post(block, MAFC)


def test_default_cfgs_and_released_checkpoint_tag():
    assert timm.list_pretrained('mobilenetv1_mafc*')[0] == 'mobilenetv1_mafc.in1k'
    model = timm.create_model('mobilenetv1_mafc', pretrained=False)
    cfg = model.pretrained_cfg
    assert cfg['hf_hub_id'] == 'timm-mrap/mobilenetv1_mafc.in1k' and cfg['num_classes'] == model.num_classes == 1000
    assert 'MAFAttention' in cfg['origin_url'] and cfg['paper_name'].startswith('Accumulating global channel-wise')
    for name in timm.list_pretrained('*_mafc*'):
        assert timm.models.get_pretrained_cfg(name).hf_hub_id == f'timm-mrap/{name}'  # full repo id, one per tag
    assert {n.split('.')[0] for n in timm.list_pretrained('*_mafc*')} == set(MAFC_MODELS)


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="'pool_types'") as e:  # MRAP's argument: MAFC's pools are fixed
        MAFC(32, pool_types=('avg', 'max'))
    assert 'rd_ratio' in str(e.value) and 'spatial_kernel_size' in str(e.value)
    with pytest.raises(TypeError, match="'bogus'"):
        MAFC(32, bogus=1)


def test_se_gate_options_are_accepted_and_ignored():
    assert MAFC(32, gate_layer='sigmoid', rd_round_fn=round).fc1.out_features == 2
    assert MAFC(32, rd_divisor=8).fc1.out_features == 2
