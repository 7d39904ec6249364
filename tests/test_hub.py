"""Hub folders, model cards, push and pretrained=True, all offline: the Hub is replaced only by its local cache
(pretrained=True) and by a recording stand-in for the HfApi client (push)."""
import argparse
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import timm
import timm_mrap
from timm_mrap.errors import CardError, HubFolderError, PushError, WeightsNotPublishedError
from timm_mrap.hub import (
    architecture_card, measure_model, push_folder, read_label_names, render_card, stale_cards, write_cards,
    write_hub_folder,
)
from timm_mrap.hub.__main__ import main as hub_main
from timm_mrap.hub.card_facts import CARD_FACTS
from timm_mrap.hub.cards import FACT_KEYS, card_template, card_values, placeholders
from timm_mrap.layers import config as mrap_config

from conftest import fill_hub_cache

ROOT = Path(__file__).resolve().parents[1]
CARD_DIR = ROOT / 'hf_cards'
IMG = 64
POOL_KWARGS = {'pool_types': ('avg', 'std', 'max'), 'rate': (0.3, 0.5, 0.2)}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """No test may reach the real Hub: huggingface_hub reads this at call time."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)


def _inputs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope='module')
def training_run(tmp_path_factory):
    """A real tiny timm training checkpoint: one SGD step with EMA, saved by timm's CheckpointSaver."""
    from timm.utils import CheckpointSaver, ModelEmaV3
    out = tmp_path_factory.mktemp('train')
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv2_mrap', num_classes=3, **POOL_KWARGS)
    ema = ModelEmaV3(model, decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(_inputs(4)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    ema.update(model)
    args = argparse.Namespace(model='mobilenetv2_mrap', num_classes=3, img_size=IMG, input_size=None, crop_pct=1.0,
                              mean=None, std=None, interpolation='', in_chans=None, model_kwargs=dict(POOL_KWARGS))
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(out))
    saver.save_checkpoint(epoch=0, metric=40.0)
    model.eval()
    ema.module.eval()
    with torch.no_grad():
        logits = {'raw': model(_inputs()), 'ema': ema.module(_inputs())}
    assert not torch.allclose(logits['raw'], logits['ema'])  # the two weight sets really differ
    labels = out / 'labels.txt'
    labels.write_text('zero\none\ntwo\n')
    return SimpleNamespace(checkpoint=out / 'model_best.pth.tar', logits=logits, model=model, labels=labels)


def _prepare_digits(run, out, **kwargs):
    options = dict(tag='digits', repo_id='someone/mobilenetv2_mrap.digits', dataset='scikit-learn digits',
                   label_names=read_label_names(run.labels), use_ema=True)
    options.update(kwargs)
    return write_hub_folder(run.checkpoint, out, **options)


@pytest.fixture(scope='module')
def ema_folder(training_run, tmp_path_factory):
    """The EMA weights of the training run, exported with a validate.py results file."""
    tmp = tmp_path_factory.mktemp('ema_folder')
    results = tmp / 'validate.json'
    results.write_text(json.dumps({'model': 'mobilenetv2_mrap', 'top1': 87.5, 'top5': 99.125, 'param_count': round(
        sum(p.numel() for p in training_run.model.parameters()) / 1e6, 2), 'img_size': IMG}))
    return _prepare_digits(training_run, tmp / 'export', results=results)


def test_prepare_training_checkpoint_loads_back_identically(training_run, ema_folder):
    out, result = ema_folder.out_dir, ema_folder
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'mobilenetv2_mrap' and config['num_classes'] == 3
    assert config['label_names'] == ['zero', 'one', 'two']
    assert config['pretrained_cfg']['input_size'] == [3, IMG, IMG] and config['pretrained_cfg']['crop_pct'] == 1.0
    assert config['pretrained_cfg']['tag'] == 'digits'
    assert config['model_args'] == {'pool_types': ['avg', 'std', 'max'], 'rate': [0.3, 0.5, 0.2]}  # architecture only

    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(_inputs()), training_run.logits['ema'])
    assert loaded.pretrained_cfg['label_names'] == ['zero', 'one', 'two']

    overlay = timm.create_model('mobilenetv2_mrap', pretrained=True, num_classes=3, **POOL_KWARGS,
                                pretrained_cfg_overlay=dict(file=str(out / 'model.safetensors'), num_classes=3)).eval()
    with torch.no_grad():
        assert torch.equal(overlay(_inputs()), training_run.logits['ema'])

    card = (out / 'README.md').read_text()
    assert placeholders(card) == []
    params = sum(p.numel() for p in loaded.parameters())
    assert f'({params:,} parameters)' in card and result.stats.params == params
    assert f'GMACs: {result.stats.macs / 1e9:.3f}' in card and result.stats.macs > 0
    assert '| 87.50 | 99.12 |' in card and 'not yet measured' not in card
    assert "timm.create_model('hf-hub:someone/mobilenetv2_mrap.digits', pretrained=True)" in card
    assert 'EMA weights (state_dict_ema)' in card


def test_prepare_from_a_hub_folder(ema_folder, tmp_path):
    """A Hub folder is a source too: architecture, model arguments and data config come from its config.json."""
    out = tmp_path / 'again'
    result = write_hub_folder(ema_folder.out_dir, out, tag='digits', repo_id='someone/mobilenetv2_mrap.digits',
                              dataset='digits', label_names=['zero', 'one', 'two'])
    assert (out / 'model.safetensors').read_bytes() != b'' and result.model.num_classes == 3
    first, again = (json.loads((d / 'config.json').read_text()) for d in (ema_folder.out_dir, out))
    assert again['model_args'] == first['model_args'] and again['pretrained_cfg'] == first['pretrained_cfg']
    with torch.no_grad():
        x = _inputs()
        assert torch.equal(timm.create_model(f'local-dir:{out}', pretrained=True).eval()(x),
                           timm.create_model(f'local-dir:{ema_folder.out_dir}', pretrained=True).eval()(x))
    assert 'Hub folder `' in (out / 'README.md').read_text()


def test_prepare_raw_weights(training_run, tmp_path):
    out = tmp_path / 'raw'
    _prepare_digits(training_run, out, use_ema=False)
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(_inputs()), training_run.logits['raw'])
    card = (out / 'README.md').read_text()
    assert 'not yet measured' in card and 'raw weights (state_dict)' in card


def test_prepare_refuses_bad_inputs(training_run, tmp_path):
    with pytest.raises(HubFolderError, match='--num-classes 5 does not match'):
        _prepare_digits(training_run, tmp_path / 'a', num_classes=5)
    with pytest.raises(HubFolderError, match='2 label names for 3 classes'):
        _prepare_digits(training_run, tmp_path / 'b', label_names=['x', 'y'])
    with pytest.raises(HubFolderError, match='does not fit.*model-kwargs'):
        _prepare_digits(training_run, tmp_path / 'c', model_kwargs={'attn': 'cbam', 'pool_types': None, 'rate': None})
    with pytest.raises(HubFolderError, match='mobilenetv2_mrap.*mobilenetv3_mrap.*--model'):
        _prepare_digits(training_run, tmp_path / 'd', model_name='mobilenetv3_mrap')
    results = tmp_path / 'other.json'
    results.write_text(json.dumps({'model': 'mobilenetv2_mrap', 'top1': 50.0, 'param_count': 9.99}))
    with pytest.raises(CardError, match='results of another model'):
        _prepare_digits(training_run, tmp_path / 'e', results=results)
    assert not (tmp_path / 'e').exists() and not list(tmp_path.glob('.e.*'))  # nothing half-written


def test_prepare_overwrite_protection_cli(training_run, tmp_path, capsys):
    out = tmp_path / 'export'
    out.mkdir()
    (out / 'config.json').write_text('{"mine": true}')
    argv = ['prepare', str(training_run.checkpoint), '--out', str(out), '--tag', 'digits', '--dataset', 'digits',
            '--repo-id', 'someone/m', '--label-names', str(training_run.labels)]
    with pytest.raises(SystemExit) as e:
        hub_main(argv)
    assert e.value.code == 2 and 'pass --overwrite' in capsys.readouterr().err
    assert (out / 'config.json').read_text() == '{"mine": true}'

    hub_main(argv + ['--overwrite'])
    assert 'Wrote' in capsys.readouterr().out
    assert json.loads((out / 'config.json').read_text())['architecture'] == 'mobilenetv2_mrap'

    (out / 'notes.txt').write_text('keep me')
    with pytest.raises(SystemExit):
        hub_main(argv + ['--overwrite'])
    assert "also holds ['notes.txt']" in capsys.readouterr().err
    assert (out / 'notes.txt').read_text() == 'keep me'
    with pytest.raises(SystemExit) as e:  # prepare has one name
        hub_main(['export'] + argv[1:])
    assert e.value.code == 2 and 'export' in capsys.readouterr().err


@pytest.mark.parametrize('prefix', ['_orig_mod.', 'module._orig_mod.'])
@pytest.mark.parametrize('layout', ['state_dict', 'train.py'])
def test_prepare_compiled_model_checkpoint(training_run, tmp_path, capsys, prefix, layout):
    """Checkpoints of a compiled (and DDP-wrapped) model: the wrapper prefixes are dropped as timm drops them."""
    weights = {prefix + k: v for k, v in training_run.model.state_dict().items()}
    path = tmp_path / 'compiled.pth.tar'
    torch.save({'epoch': 3, 'arch': 'mobilenetv2_mrap', 'state_dict': weights} if layout == 'train.py' else weights,
               path)
    out = tmp_path / 'out'
    hub_main(['prepare', str(path), '--out', str(out), '--model', 'mobilenetv2_mrap', '--tag', 'digits',
              '--dataset', 'digits', '--repo-id', 'someone/m', '--model-kwargs', 'pool_types=("avg","std","max")',
              'rate=(0.3,0.5,0.2)'])
    assert '3 classes' in capsys.readouterr().out
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(_inputs()), training_run.logits['raw'])


def test_folder_loads_under_any_implementation(training_run, tmp_path, monkeypatch):
    """The implementation is a switch: a folder holds architecture arguments only and loads under another one."""
    out = tmp_path / 'export'
    write_hub_folder(training_run.checkpoint, out, tag='digits', repo_id='someone/mobilenetv2_mrap.digits',
                     dataset='scikit-learn digits', use_ema=True)
    config = json.loads((out / 'config.json').read_text())
    assert config['model_args'] == {'pool_types': ['avg', 'std', 'max'], 'rate': [0.3, 0.5, 0.2]}
    monkeypatch.setattr(mrap_config, '_MRAP_IMPL', 'reference')
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    assert {m.impl for m in loaded.modules() if isinstance(m, timm_mrap.MRAP)} == {'reference'}
    with torch.no_grad():
        logits = loaded(_inputs())
    # the reference ops round the statistics differently from the operators' kernel; near-equal statistics can swap
    # places in the top-n sort of a trained network, which moves its logits by ~0.2%
    torch.testing.assert_close(logits, training_run.logits['ema'], atol=2e-2 * logits.abs().max().item(), rtol=0.)
    assert torch.equal(logits.argmax(1), training_run.logits['ema'].argmax(1))


def test_non_default_channels_stay_in_model_args(tmp_path):
    """in_chans changes the stem: kept in model_args when it is not 3, so clients that pass only model_args build it."""
    from safetensors.torch import save_file
    from transformers import AutoModelForImageClassification
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv3_small_mrap', num_classes=2, in_chans=1).eval()
    save_file(model.state_dict(), tmp_path / 'gray.safetensors')
    write_hub_folder(tmp_path / 'gray.safetensors', tmp_path / 'export', model_name='mobilenetv3_small_mrap',
                     tag='gray',
                 repo_id='someone/gray', dataset='grey images', model_kwargs={'in_chans': 1},
                 data_config={'img_size': IMG})
    config = json.loads((tmp_path / 'export' / 'config.json').read_text())
    assert config['model_args'] == {'in_chans': 1} and config['pretrained_cfg']['input_size'][0] == 1
    x = torch.randn(2, 1, IMG, IMG, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(timm.create_model(f'local-dir:{tmp_path / "export"}', pretrained=True).eval()(x), expected)
        hf_model = AutoModelForImageClassification.from_pretrained(tmp_path / 'export').eval()
        torch.testing.assert_close(hf_model(pixel_values=x).logits, expected, rtol=0, atol=1e-5)


def test_pushed_folder_loads_in_transformers(training_run, ema_folder, tmp_path):
    from transformers import AutoModelForImageClassification
    api = RecordingHubApi(tmp_path / 'remote')
    push_folder(ema_folder.out_dir, 'someone/mobilenetv2_mrap.digits', api=api)
    uploaded = tmp_path / 'remote' / 'someone' / 'mobilenetv2_mrap.digits' / 'main'
    assert (uploaded / 'config.json').read_bytes() == (ema_folder.out_dir / 'config.json').read_bytes()
    hf_model = AutoModelForImageClassification.from_pretrained(uploaded).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=_inputs()).logits, training_run.logits['ema'],
                                   rtol=0, atol=1e-5)


def test_label_names_follow_timm_image_folder_order(tmp_path):
    from PIL import Image
    for name in ('dog', '10', 'cat', '2'):
        (tmp_path / name).mkdir()
        Image.new('RGB', (8, 8)).save(tmp_path / name / 'a.png')
    dataset = timm.data.create_dataset('', root=str(tmp_path))
    expected = sorted(dataset.reader.class_to_idx, key=dataset.reader.class_to_idx.get)
    assert read_label_names(tmp_path) == expected == ['2', '10', 'cat', 'dog']
    with pytest.raises(HubFolderError, match='no class folders'):
        read_label_names(tmp_path / 'cat')


def _readme_bibtex() -> str:
    readme = (ROOT / 'README.md').read_text()
    return readme.split('## Citation', 1)[1].split('```bibtex\n', 1)[1].split('```', 1)[0]


OUR_MODELS = sorted(timm.list_models('*_mrap') + timm.list_models('*_mafc'))


def test_every_registered_model_has_a_card():
    assert OUR_MODELS and sorted(CARD_FACTS) == OUR_MODELS, 'add a CARD_FACTS entry in timm_mrap/hub/card_facts.py'
    assert sorted(p.stem for p in CARD_DIR.glob('*.md') if p.name != 'README.md') == OUR_MODELS


def test_hf_cards_are_generated_from_the_packaged_source():
    stale = stale_cards(CARD_DIR)
    assert stale == [], f'{stale}: rewrite them with python -m timm_mrap.hub cards hf_cards'


def test_one_template_makes_every_card():
    template = card_template()
    assert set(FACT_KEYS) <= set(placeholders(template))
    for model_name in OUR_MODELS:
        card = architecture_card(model_name)
        assert placeholders(card) == sorted(set(placeholders(template)) - set(FACT_KEYS))
        assert f'registers {model_name} with timm' in card
        attention = CARD_FACTS[model_name].attention
        assert f'- {attention}\n' in card.split('---\n')[1]  # front-matter tag
    # a fix in the template reaches every card
    fixed = template.replace('## Model Details', '## Model Details\n- **Fixed:** once')
    assert all('- **Fixed:** once' in architecture_card(m, fixed) for m in OUR_MODELS)
    with pytest.raises(CardError, match='no .*papers'):
        architecture_card('mobilenetv2_mrap', template.replace('{{ papers }}', ''))
    with pytest.raises(CardError, match='add a CARD_FACTS entry'):
        architecture_card('resnet50')


def test_cards_command_writes_and_checks(tmp_path, capsys):
    folder = tmp_path / 'cards'
    hub_main(['cards', str(folder)])
    assert sorted(p.stem for p in folder.glob('*.md')) == sorted(CARD_FACTS)
    hub_main(['cards', str(folder), '--check'])
    assert 'every card matches' in capsys.readouterr().out
    card = folder / 'mobilenetv1_mafc.md'
    card.write_text(card.read_text().replace('MAFC', 'MAFX'))
    (folder / 'mobilenetv9_mrap.md').write_text('old')
    with pytest.raises(SystemExit) as e:
        hub_main(['cards', str(folder), '--check'])
    err = capsys.readouterr().err
    assert e.value.code == 1 and 'mobilenetv1_mafc.md (differs' in err and 'mobilenetv9_mrap.md (no such' in err
    assert write_cards(folder) and stale_cards(folder) == [f'{folder / "mobilenetv9_mrap.md"} (no such architecture '
                                                           f'in card_facts.py)']


def test_prepare_with_a_card_folder(training_run, tmp_path):
    cards = tmp_path / 'cards'
    write_cards(cards)
    custom = cards / 'mobilenetv2_mrap.md'
    custom.write_text(custom.read_text().replace('## Model Usage', 'Trained for the demo.\n\n## Model Usage'))
    _prepare_digits(training_run, tmp_path / 'out', card_dir=cards)
    assert 'Trained for the demo.' in (tmp_path / 'out' / 'README.md').read_text()
    with pytest.raises(CardError, match='No model card .*drop --card-dir'):
        _prepare_digits(training_run, tmp_path / 'out2', card_dir=tmp_path)


@pytest.mark.parametrize('model_name', OUR_MODELS)
def test_card_renders_completely(model_name):
    model = timm.create_model(model_name, num_classes=7)
    stats = measure_model(model, (3, IMG, IMG))
    assert stats.params == sum(p.numel() for p in model.parameters()) and stats.macs > 0
    values = card_values(model_name=f'{model_name}.demo', repo_id=f'someone/{model_name}.demo',
                         create_name=f'hf-hub:someone/{model_name}.demo', stats=stats, num_classes=7,
                         dataset='demo data', dataset_id='demo', license='apache-2.0', weights_source='a test')
    card = render_card(architecture_card(model_name), values)
    assert placeholders(card) == [] and '{{' not in card
    front, body = card.split('---\n')[1], card.split('---\n', 2)[2]
    assert 'library_name: timm' in front and 'license: apache-2.0' in front and 'datasets:\n- demo' in front
    assert '- image-classification' in front and '- timm' in front and 'transformers' not in card
    sections = re.findall(r'^## (.+)$', body, flags=re.M)
    assert sections == ['Model Details', 'Model Usage', 'Model Comparison', 'Citation']
    usage = body.split('## Model Usage', 1)[1].split('## Model Comparison')[0]
    assert all(block.startswith('import timm_mrap') for block in re.findall(r'```python\n(.*?)```', usage, re.S))
    assert '### Feature Map Extraction' in usage and '### Image Embeddings' in usage
    assert f'# {tuple(stats.feature_shapes[-1])}' in usage and str(tuple(stats.embedding_shape)) in usage
    assert 'not yet measured' in card
    assert f'- **Package:** timm-mrap {timm_mrap.__version__} ' in card
    assert _readme_bibtex() in card
    with pytest.raises(CardError, match='needs values'):
        render_card('{{ params }} {{ surprise }}', {'params': '1'})


@pytest.fixture(scope='module')
def published_v2(tmp_path_factory):
    """A 100-class mobilenetv2_mrap export for its default tag (rein100), from a safetensors state dict."""
    from safetensors.torch import save_file
    tmp = tmp_path_factory.mktemp('published')
    torch.manual_seed(1)
    model = timm.create_model('mobilenetv2_mrap').eval()
    torch.nn.init.normal_(model.classifier.bias)  # a trained-looking bias, unlike timm's zero init
    save_file(model.state_dict(), tmp / 'weights.safetensors')
    result = write_hub_folder(tmp / 'weights.safetensors', tmp / 'export', model_name='mobilenetv2_mrap')
    assert result.repo_id == 'timm-mrap/mobilenetv2_mrap.rein100' and model.num_classes == 100
    card = (tmp / 'export' / 'README.md').read_text()
    assert "timm.create_model('mobilenetv2_mrap.rein100', pretrained=True)" in card and '- imagenet-1k' in card
    with torch.no_grad():
        torch.save(model(_inputs()), tmp / 'logits.pt')
    return SimpleNamespace(folder=tmp / 'export', root=tmp, model=model)


def test_pretrained_true_from_offline_hub_cache(published_v2):
    """A published tag resolves its repo in a pre-filled cache with HF_HUB_OFFLINE=1, as timm fetches it; an
    unpublished one is refused even when a repo of that name is in the cache."""
    hub_cache = published_v2.root / 'hf_home' / 'hub'
    fill_hub_cache(hub_cache, 'timm-mrap/mobilenetv2_mrap.rein100', published_v2.folder)
    script = textwrap.dedent(f'''
        import json, torch, timm, timm_mrap
        from timm_mrap.errors import WeightsNotPublishedError
        from timm_mrap.models import pretrained
        x = torch.randn(2, 3, {IMG}, {IMG}, generator=torch.Generator().manual_seed(0))
        out = {{}}
        try:
            timm.create_model('mobilenetv2_mrap', pretrained=True)
        except WeightsNotPublishedError as e:
            out['unpublished'] = str(e)
        pretrained.PUBLISHED_REPOS = frozenset({{'timm-mrap/mobilenetv2_mrap.rein100'}})
        for name in ('mobilenetv2_mrap', 'mobilenetv2_mrap.rein100', 'hf-hub:timm-mrap/mobilenetv2_mrap.rein100'):
            model = timm.create_model(name, pretrained=True).eval()
            with torch.no_grad():
                out[name] = bool(torch.equal(model(x), torch.load({str(published_v2.root / 'logits.pt')!r})))
        out['hub_id'] = timm.create_model('mobilenetv2_mrap', pretrained=True).pretrained_cfg['hf_hub_id']
        pretrained.PUBLISHED_REPOS = frozenset({{'timm-mrap/mobilenetv1_mrap.rein100'}})
        try:
            timm.create_model('mobilenetv1_mrap', pretrained=True)
        except WeightsNotPublishedError as e:
            out['error'] = str(e)
        print(json.dumps(out))
    ''')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HOME': str(hub_cache.parent), 'HF_HUB_CACHE': str(hub_cache)}
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['mobilenetv2_mrap'] and out['mobilenetv2_mrap.rein100']
    assert out['hf-hub:timm-mrap/mobilenetv2_mrap.rein100']
    assert out['hub_id'] == 'timm-mrap/mobilenetv2_mrap.rein100'
    assert "'timm-mrap/mobilenetv2_mrap.rein100'" in out['unpublished'] and 'not published' in out['unpublished']
    error = out['error']  # listed as published, but not in this cache
    assert "'timm-mrap/mobilenetv1_mrap.rein100'" in error and 'HF_HUB_OFFLINE=1' in error
    assert './train.sh' in error and 'python -m timm_mrap.convert' in error


@pytest.mark.parametrize('name', ['mobilenetv2_mrap', 'mobilenetv3_small_mrap.rein100', 'mobilenetv1_mafc.in1k'])
def test_unpublished_tag_fails_without_asking_the_hub(name, monkeypatch):
    import huggingface_hub
    import timm.models._hub

    def no_hub(*args, **kwargs):
        raise AssertionError(f'the Hub was asked for {args} {kwargs}')

    for module in (huggingface_hub, huggingface_hub.file_download, timm.models._hub):
        for fn in ('hf_hub_download', 'snapshot_download'):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, no_hub)
    with pytest.raises(WeightsNotPublishedError) as e:
        timm.create_model(name, pretrained=True)
    assert e.match('not published') and e.match('timm-mrap/') and e.match('local-dir:')


def test_not_published_error_keeps_other_paths(tmp_path):
    """In-process (offline): the clear error for the Hub miss; timm's own errors elsewhere; pretrained=False works."""
    with pytest.raises(WeightsNotPublishedError, match='mobilenetv3_mrap.rein100.*not published yet'):
        timm.create_model('mobilenetv3_mrap', pretrained=True)
    with pytest.raises(FileNotFoundError) as e:
        timm.create_model('mobilenetv3_mrap', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'missing.safetensors')))
    assert not isinstance(e.value, WeightsNotPublishedError)
    assert timm.create_model('mobilenetv3_mrap', pretrained=False, num_classes=4).num_classes == 4


def test_finetune_replaces_only_the_classifier(published_v2):
    source = published_v2.model.state_dict()
    model = timm.create_model('mobilenetv2_mrap', pretrained=True, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(published_v2.folder / 'model.safetensors')))
    tuned = model.state_dict()
    backbone = [k for k in tuned if not k.startswith('classifier.')]
    assert len(backbone) == len(source) - 2 and all(torch.equal(tuned[k], source[k]) for k in backbone)
    assert tuned['classifier.weight'].shape == (5, 1280)
    assert not torch.allclose(tuned['classifier.weight'], source['classifier.weight'][:5])
    assert torch.count_nonzero(source['classifier.bias']) == 100
    assert torch.count_nonzero(tuned['classifier.bias']) == 0  # timm's fresh init, not the pretrained bias


class RecordingHubApi:
    """Local stand-in for huggingface_hub.HfApi: records calls (checked against HfApi's real signatures) and keeps
    the 'remote' repos as folders, one per revision."""

    def __init__(self, remote: Path):
        self.remote, self.calls = remote, []

    def _record(self, name, *args, **kwargs):
        from huggingface_hub import HfApi
        inspect.signature(getattr(HfApi, name)).bind(None, *args, **kwargs)  # TypeError on a wrong call
        self.calls.append((name, kwargs))

    def _dir(self, repo_id, revision):
        return self.remote / repo_id / (revision or 'main')

    def create_repo(self, repo_id, **kwargs):
        self._record('create_repo', repo_id, **kwargs)
        self._dir(repo_id, None).mkdir(parents=True, exist_ok=kwargs.get('exist_ok', False))
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, **kwargs):
        self._record('create_branch', repo_id, **kwargs)
        branch = self._dir(repo_id, kwargs['branch'])
        if not branch.exists():
            shutil.copytree(self._dir(repo_id, None), branch)

    def list_repo_files(self, repo_id, **kwargs):
        self._record('list_repo_files', repo_id, **kwargs)
        return sorted(p.name for p in self._dir(repo_id, kwargs.get('revision')).iterdir())

    def upload_folder(self, **kwargs):
        self._record('upload_folder', **kwargs)
        target = self._dir(kwargs['repo_id'], kwargs.get('revision'))
        if kwargs.get('create_pr'):
            target = self.remote / kwargs['repo_id'] / f'pr-{len(self.calls)}'
        shutil.copytree(kwargs['folder_path'], target, dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f'local://{target}', pr_url=None)


def test_push_uploads_the_export(ema_folder, tmp_path):
    folder = tmp_path / 'export'
    shutil.copytree(ema_folder.out_dir, folder)
    api = RecordingHubApi(tmp_path / 'remote')
    push_folder(folder, 'someone/mobilenetv2_mrap.digits', revision='v1', private=True, api=api)
    uploaded = tmp_path / 'remote' / 'someone' / 'mobilenetv2_mrap.digits' / 'v1'
    assert sorted(p.name for p in uploaded.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert all((uploaded / f).read_bytes() == (folder / f).read_bytes() for f in ('README.md', 'model.safetensors'))
    calls = dict(api.calls)
    assert calls['create_repo'] == dict(private=True, exist_ok=True, repo_type='model')
    assert calls['create_branch']['branch'] == 'v1'
    assert calls['upload_folder']['revision'] == 'v1' and calls['upload_folder']['create_pr'] is False
    assert sorted(calls['upload_folder']['allow_patterns']) == ['README.md', 'config.json', 'model.safetensors']

    # the repo now has a README and weights: no silent replacement
    with pytest.raises(PushError, match=r"already has \['README.md', 'model.safetensors'\].*--overwrite"):
        push_folder(folder, 'someone/mobilenetv2_mrap.digits', revision='v1', api=api)
    assert [c[0] for c in api.calls].count('upload_folder') == 1
    push_folder(folder, 'someone/mobilenetv2_mrap.digits', revision='v1', create_pr=True, overwrite=True, api=api)
    assert api.calls[-1][0] == 'upload_folder' and api.calls[-1][1]['create_pr'] is True

    with pytest.raises(PushError, match='written for another repo'):
        push_folder(folder, 'someone/else', api=api)
    (folder / 'pytorch_model.bin').write_bytes(b'pickle')
    with pytest.raises(PushError, match='pytorch_model.bin'):
        push_folder(folder, 'someone/mobilenetv2_mrap.digits', api=api)
