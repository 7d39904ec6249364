"""The in1k_backbone tags: timm's own ImageNet weights (timm-format files in a pre-filled, offline Hub cache) loaded
through pretrained=True, mapped onto our keys, with attention left at its initialisation."""
import pytest
import torch
from torch import nn

import timm
from timm.models import get_pretrained_cfg

from timm_mrap import MRAP
from timm_mrap.errors import WeightsNotPublishedError
from timm_mrap.models.warm_start import TIMM_BACKBONES, checkpoint_filter_fn

from conftest import fill_hub_cache

IMG = 64
# our architecture -> timm's architecture of the same backbone
TIMM_ARCH = {ours: source.split('.')[0] for ours, source in TIMM_BACKBONES.items()}
FIRST_BLOCK = {'conv_dw': 'conv_dw', 'bn1': 'bn2', 'conv_pw': 'conv_pwl', 'bn2': 'bn3'}  # timm ds -> our ir e1


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


def _timm_weights(arch: str, hub_cache, seed: int = 0) -> nn.Module:
    """timm's own model with non-trivial BN statistics and affine terms, saved as its Hub repo in ``hub_cache``."""
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    model = timm.create_model(TIMM_ARCH[arch]).eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(m.num_features, generator=g))
    nn.init.normal_(model.get_classifier().bias)
    folder = hub_cache.parent / f'{arch}_src'
    folder.mkdir()
    save_file(model.state_dict(), folder / 'model.safetensors')
    fill_hub_cache(hub_cache, f'timm/{TIMM_BACKBONES[arch]}', folder)
    return model


def test_v2_with_no_attention_reproduces_timms_mobilenetv2_exactly(offline_hub):
    source = _timm_weights('mobilenetv2_mrap', offline_hub)
    model = timm.create_model('mobilenetv2_mrap.in1k_backbone', pretrained=True, attn='none').eval()
    assert model.pretrained_cfg['hf_hub_id'] == 'timm/mobilenetv2_100.ra_in1k' and model.num_classes == 1000
    with torch.no_grad():
        assert torch.equal(model(_input()), source(_input()))
        # the extra first-block expansion (conv + BN + ReLU6) is an exact identity on the stem's output
        first = model.blocks[0][0]
        x = torch.relu(torch.randn(2, 32, 9, 9))
        assert torch.equal(first.bn1(first.conv_pw(x)), x)


@pytest.mark.parametrize('arch', TIMM_BACKBONES)
def test_warm_start_copies_backbone_and_leaves_attention_untrained(arch, offline_hub):
    source = _timm_weights(arch, offline_hub)
    torch.manual_seed(3)
    fresh = timm.create_model(arch, num_classes=1000)
    torch.manual_seed(3)
    model = timm.create_model(f'{arch}.in1k_backbone', pretrained=True).eval()
    assert model.pretrained_cfg['tag'] == 'in1k_backbone'
    ours, init = model.state_dict(), fresh.state_dict()

    first_block = hasattr(model.blocks[0][0], 'conv_pwl')  # V2 / V3: timm's ds block -> our ir block of e1
    for key, value in source.state_dict().items():
        if '.se.' in key or key == 'conv_head.bias' and 'conv_head.bias' not in ours:
            continue  # timm's SE and V3 head bias: dropped (documented)
        if first_block and key.startswith('blocks.0.0.'):
            module, _, rest = key[len('blocks.0.0.'):].partition('.')
            key = f'blocks.0.0.{FIRST_BLOCK[module]}.{rest}'
        assert torch.equal(ours[key], value), key
    attn = [k for k in ours if '.se.' in k]
    assert attn and all(torch.equal(ours[k], init[k]) for k in attn)  # attention stays at its initialisation
    assert sum(isinstance(m, MRAP) for m in model.modules()) > 0
    if first_block:
        # new: the 1x1 expansion (conv + BN + act) in front of timm's first block is an exact identity on inputs >= 0
        first = model.blocks[0][0]
        with torch.no_grad():
            x = torch.relu(torch.randn(2, first.conv_pw.in_channels, 16, 16))
            assert torch.equal(first.bn1(first.conv_pw(x)), x)
    with torch.no_grad():
        assert torch.isfinite(model(_input())).all()


@pytest.mark.parametrize('arch', ['mobilenetv2_mrap', 'mobilenetv3_small_mrap'])
def test_num_classes_replaces_only_the_classifier(arch, offline_hub):
    _timm_weights(arch, offline_hub)
    full = timm.create_model(f'{arch}.in1k_backbone', pretrained=True).state_dict()
    tuned = timm.create_model(f'{arch}.in1k_backbone', pretrained=True, num_classes=5).state_dict()
    attn_or_head = lambda k: '.se.' in k or k.startswith('classifier.')  # noqa: E731
    assert all(torch.equal(tuned[k], full[k]) for k in tuned if not attn_or_head(k))
    assert set(tuned) == set(full)
    assert tuned['classifier.weight'].shape[0] == 5 and torch.count_nonzero(tuned['classifier.bias']) == 0

    features = timm.create_model(f'{arch}.in1k_backbone', pretrained=True, features_only=True)
    assert torch.equal(features.conv_stem.weight, full['conv_stem.weight'])


def test_backbone_tag_is_never_the_default(offline_hub):
    for arch in TIMM_BACKBONES:
        assert get_pretrained_cfg(arch).tag == 'rein100'
        assert timm.create_model(arch).pretrained_cfg['tag'] == 'rein100'
    _timm_weights('mobilenetv2_mrap', offline_hub)  # timm's weights are in the cache, ours are not
    with pytest.raises(WeightsNotPublishedError, match='mobilenetv2_mrap.rein100'):
        timm.create_model('mobilenetv2_mrap', pretrained=True)
    with pytest.raises(WeightsNotPublishedError, match='timm/mobilenetv3_small_100') as e:
        timm.create_model('mobilenetv3_small_mrap.in1k_backbone', pretrained=True)
    assert e.match('not in the local Hub cache') and e.match('HF_HUB_CACHE')


def test_filter_passes_our_layout_and_refuses_other_weights():
    model = timm.create_model('mobilenetv3_mrap')
    ours = model.state_dict()
    assert checkpoint_filter_fn(ours, model) is ours  # our own checkpoints load as they are
    with pytest.raises(ValueError, match='MobileNetV3') as e:
        checkpoint_filter_fn(timm.create_model('mobilenetv2_100').state_dict(), model)
    assert e.match('not fit') and e.match('backbone')
