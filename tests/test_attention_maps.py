"""Attention maps: MRAP spatial / channel weights captured by hooks, drawn as PNGs of the documented size."""
import pytest
import torch

import timm
import timm_mrap  # noqa: F401  registers the models
from timm_mrap.attention_maps import attention_maps, main, mrap_modules

pytest.importorskip('matplotlib')
Image = pytest.importorskip('PIL.Image')


def test_maps_equal_the_modules_own_weights():
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv2_mrap', num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    maps = attention_maps(model, x, blocks=['blocks.2', 'blocks.5.2.se'])
    assert list(maps) == ['blocks.2.0.se', 'blocks.2.1.se', 'blocks.2.2.se', 'blocks.5.2.se']
    seen = {}
    module = mrap_modules(model)['blocks.5.2.se']
    handle = module.register_forward_pre_hook(lambda mod, args: seen.setdefault('x', args[0].clone()))
    model(x)
    handle.remove()
    torch.testing.assert_close(maps['blocks.5.2.se'].spatial, module.spatial_weight(seen['x']))
    assert maps['blocks.2.0.se'].spatial.shape == (1, 1, 8, 8) and maps['blocks.2.0.se'].channel.shape == (1, 144)
    assert maps['blocks.5.2.se'].spatial.shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="No MRAP module named 'blocks.9'; choose from"):
        attention_maps(model, x, blocks=['blocks.9'])
    with pytest.raises(ValueError, match='no MRAP modules'):
        attention_maps(timm.create_model('mobilenetv2_mrap', attn='se'), x)


def test_command_writes_pngs_of_the_expected_size(tmp_path, capsys):
    image = tmp_path / 'image.png'
    Image.fromarray((torch.rand(90, 120, 3) * 255).byte().numpy()).save(image)
    out, channels = tmp_path / 'maps.png', tmp_path / 'channels.png'
    args = ['--model', 'mobilenetv3_mrap', '--image', str(image), '--img-size', '64', '--out', str(out),
            '--channels-out', str(channels), '--blocks', 'blocks.2.2.se', 'blocks.5', '--panel-size', '100']
    main(args)
    printed = capsys.readouterr().out
    assert 'random init (seed 0)' in printed and 'blocks.5.2.se' in printed
    assert Image.open(out).size == (100 * (1 + 4), 100)  # the image + blocks.2.2 + three in stage 5
    assert Image.open(channels).size == (768, 160 * 4)
    with pytest.raises(SystemExit) as e:  # never overwrite without the flag
        main(args)
    assert e.value.code == 2 and '--overwrite' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(args[:6] + ['--out', str(tmp_path / 'tiny.png'), '--img-size', '16'])
    assert e.value.code == 2 and 'too small' in capsys.readouterr().err
