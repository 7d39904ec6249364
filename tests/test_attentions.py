"""Every attention choice on every MobileNet family: builds, trains, features, meta device, ONNX; SimAM's formula.

Inputs are 32 px (the last stages see 1 x 1 maps) to keep the grid of choices x families fast.
"""
import functools
import json

import pytest
import torch
from torch import nn

import timm

from timm_mrap.layers import ATTN_CHOICES, ATTN_LAYERS, SimAM, resolve_attn

FAMILIES = ('mobilenetv1_mrap', 'mobilenetv2_mrap', 'mobilenetv3_mrap', 'mobilenetv3_small_mrap')
IMG = 32
NUM_CLASSES = 5


def _input(batch: int = 2, size: int = IMG) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@functools.lru_cache(maxsize=None)
def _backbone_keys(name: str) -> frozenset:
    """The state-dict keys of ``name`` without attention."""
    return frozenset(timm.create_model(name, attn='none', num_classes=NUM_CLASSES).state_dict())


def _attention_modules(model: nn.Module) -> list:
    return [m for n, m in model.named_modules() if n.endswith('.se') and not isinstance(m, nn.Identity)]


@pytest.mark.parametrize('attn', ATTN_CHOICES)
@pytest.mark.parametrize('name', FAMILIES)
def test_every_choice_trains_on_the_shared_backbone(name, attn):
    model = timm.create_model(name, attn=attn, num_classes=NUM_CLASSES).train()
    layer = ATTN_LAYERS[attn][0]
    kind = getattr(layer, 'func', layer)
    found = _attention_modules(model)
    assert (not found) if attn == 'none' else (found and all(isinstance(m, kind) for m in found))
    assert {k for k in model.state_dict() if '.se.' not in k} == _backbone_keys(name)

    out = model(_input())
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize('attn', ATTN_CHOICES)
@pytest.mark.parametrize('name', FAMILIES)
def test_every_choice_gives_features(name, attn):
    model = timm.create_model(name, attn=attn, features_only=True, out_indices=(1, 4)).eval()
    with torch.no_grad():
        outs = model(_input())
    assert [o.shape[1] for o in outs] == model.feature_info.channels()
    assert [IMG // o.shape[-1] for o in outs] == model.feature_info.reduction()


@pytest.mark.parametrize('attn', ATTN_CHOICES)
@pytest.mark.parametrize('name', FAMILIES)
def test_every_choice_builds_on_the_meta_device(name, attn):
    """As transformers builds timm models: on 'meta', ``to_empty``, then the weights."""
    with torch.device('meta'):
        meta_model = timm.create_model(name, attn=attn, num_classes=NUM_CLASSES)
    assert all(p.is_meta for p in meta_model.parameters())
    meta_model = meta_model.to_empty(device='cpu').eval()
    model = timm.create_model(name, attn=attn, num_classes=NUM_CLASSES).eval()
    meta_model.load_state_dict(model.state_dict())
    for module in meta_model.modules():
        if hasattr(module, 'init_non_persistent_buffers'):
            module.init_non_persistent_buffers()
    with torch.no_grad():
        torch.testing.assert_close(meta_model(_input()), model(_input()), rtol=0, atol=0)


def _block(attn: str) -> nn.Module:
    """A MobileNetV3 block with ``attn`` (hard-swish, 24 -> 96 -> 40 channels), its BN statistics not the identity."""
    torch.manual_seed(0)
    block = timm.create_model('mobilenetv3_small_mrap', attn=attn).blocks[2][0].eval()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.running_mean)
            nn.init.uniform_(m.running_var, 0.5, 2.)
    return block


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # the TorchScript-based exporter: seconds, not minutes
@pytest.mark.parametrize('attn', [a for a in ATTN_CHOICES if a != 'none'])
def test_every_choice_exports_to_onnx(tmp_path, attn):
    """A block with the attention, exported with dynamic batch and size, matches PyTorch at other sizes."""
    pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    block = _block(attn)
    in_chs = block.conv_pw.in_channels
    path = tmp_path / f'{attn}.onnx'
    torch.onnx.export(block, (torch.randn(2, in_chs, 8, 8),), str(path), dynamo=False, input_names=['x'],
                      dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'}})
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for shape in [(2, in_chs, 8, 8), (3, in_chs, 5, 11), (1, in_chs, 1, 1)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = block(x)
        got = torch.from_numpy(session.run(None, {'x': x.numpy()})[0])
        assert got.shape == expected.shape
        scale = expected.abs().max().item()
        assert (got - expected).abs().max().item() <= 1e-4 * max(1., scale), f'{attn} at {shape}'


@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch.jit.script is deprecated; timm still tests it
@pytest.mark.parametrize('attn', [a for a in ATTN_CHOICES if a not in ('none', 'mrap')])  # MRAP: test_models
def test_every_choice_scripts(attn):
    block = _block(attn)
    x = torch.randn(2, block.conv_pw.in_channels, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(block)(x), block(x))


@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (1, 4, 2, 1)])
def test_simam_matches_its_formula(shape):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    e_lambda = 1e-3
    d = (x - x.mean((2, 3), keepdim=True)) ** 2
    energy_inv = d / (4 * (torch.var(x, dim=(2, 3), correction=1, keepdim=True) + e_lambda)) + 0.5
    torch.testing.assert_close(SimAM(shape[1], e_lambda=e_lambda)(x), x * torch.sigmoid(energy_inv), rtol=1e-12,
                               atol=1e-12)
    assert SimAM(8).e_lambda == 1e-4 and not list(SimAM(8).parameters())


def test_simam_on_single_pixels_is_finite():
    x = torch.randn(2, 4, 1, 1, requires_grad=True)
    y = SimAM(4)(x)
    torch.testing.assert_close(y, x * torch.sigmoid(torch.tensor(0.5)))  # d = 0: the divisor H*W - 1 is taken as 1
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_ratios_follow_the_papers_and_timm():
    """Spot checks of the reduced channels each layer gets in a block (the docstring table of create_attn)."""
    model = timm.create_model('mobilenetv2_mrap', attn='coord')
    first, last = model.blocks[0][0].se, model.blocks[6][0].se  # 32 and 960 channels
    assert (first.conv1.out_channels, last.conv1.out_channels) == (8, 32)  # max(8, C // 32)
    model = timm.create_model('mobilenetv2_mrap', attn='cbam')
    assert model.blocks[6][0].se.channel.fc1.out_channels == 960 // 16
    model = timm.create_model('mobilenetv2_mrap', attn='gc')
    assert model.blocks[6][0].se.mlp_scale.fc1.out_channels == 960 // 16
    model = timm.create_model('mobilenetv2_mrap', attn='ge')
    assert model.blocks[6][0].se.mlp.fc1.out_channels == 960 // 16


def test_unknown_attention_lists_the_choices():
    with pytest.raises(ValueError, match='Unknown attn') as e:
        timm.create_model('mobilenetv2_mrap', attn='triplet')
    assert all(a in str(e.value) for a in ATTN_CHOICES)
    with pytest.raises(ValueError, match='Unknown attn'):
        resolve_attn('SE')


@pytest.fixture(scope='module')
def hub_offline():
    """No Hub request: the folders are local and huggingface_hub reads this at call time."""
    import huggingface_hub.constants
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
        mp.setenv('HF_HUB_OFFLINE', '1')
        yield


@pytest.mark.parametrize('attn', ATTN_CHOICES)
def test_every_choice_is_recorded_in_hub_folders_and_loads_in_transformers(tmp_path, hub_offline, attn):
    """``attn`` goes to the ``config.json`` of a Hub folder, and transformers builds the same model from it."""
    from safetensors.torch import save_file
    from transformers import AutoModelForImageClassification
    from timm_mrap.hub import write_hub_folder
    name = 'mobilenetv3_small_mrap'
    torch.manual_seed(0)
    model = timm.create_model(name, attn=attn, num_classes=NUM_CLASSES).eval()
    save_file(model.state_dict(), tmp_path / 'weights.safetensors')
    write_hub_folder(tmp_path / 'weights.safetensors', tmp_path / 'hub', model_name=name, tag='test',
                     repo_id=f'someone/{name}.test', dataset='noise', model_kwargs={'attn': attn},
                     data_config={'img_size': IMG, 'crop_pct': 1.0})
    config = json.loads((tmp_path / 'hub' / 'config.json').read_text())
    assert config.get('model_args', {}).get('attn', 'mrap') == attn  # mrap is the default: nothing to record
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / 'hub').eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=_input()).logits, model(_input()), rtol=0, atol=1e-5)
