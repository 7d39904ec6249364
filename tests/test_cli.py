"""train.sh / validate.sh: argument handling, runner choice, torchrun pass-through, checkpoint kinds, results files."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_mrap  # noqa: F401
from timm_mrap.convert import fold_data_bn
from timm_mrap.errors import CliError, InputError
from timm_mrap.training import cli, commands
from timm_mrap.training.runner import build_command, checkpoint_args

from conftest import fixture_state_dict, load_fixture

ROOT = Path(__file__).resolve().parents[1]

# a stand-in for timm's validate.py, written against timm's public API: real model, checkpoint, data and metric
FAKE_VALIDATE = '''
import argparse, json
import timm, torch
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.models import load_checkpoint
p = argparse.ArgumentParser()
for flag in ('--data-dir', '--model', '--checkpoint', '--device'):
    p.add_argument(flag, default='')
p.add_argument('--num-classes', type=int)
p.add_argument('--img-size', type=int)
p.add_argument('--mean', type=float, nargs='+')
p.add_argument('--std', type=float, nargs='+')
args = p.parse_args()
model = timm.create_model(args.model, num_classes=args.num_classes).eval()
load_checkpoint(model, args.checkpoint)
cfg = resolve_data_config(vars(args), model=model)
loader = create_loader(create_dataset('', root=args.data_dir, split='validation'), cfg['input_size'], batch_size=4,
                       mean=cfg['mean'], std=cfg['std'], crop_pct=cfg['crop_pct'], use_prefetcher=False)
correct = total = 0
with torch.no_grad():
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
print('--result')
print(json.dumps({'model': args.model, 'top1': 100. * correct / total, 'num': total, 'mean': list(cfg['mean']),
                  'num_classes': args.num_classes}, indent=4))
'''


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    for var in ('TIMM_SCRIPTS_DIR', 'NPROC', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'TIMM_MRAP_RUNNER'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('TIMM_SCRIPTS_OFFLINE', '1')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))


@pytest.fixture
def data(tmp_path):
    """A 2-class ImageFolder with train/ and validation/, 2 tiny PNGs per class."""
    root = tmp_path / 'data'
    for split in ('train', 'validation'):
        for c in ('cat', 'dog'):
            for i in range(2):
                (root / split / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(root / split / c / f'{i}.png')
    return root


def _dry(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out.strip().splitlines(), out.err


def test_layer_options_and_commands(monkeypatch):
    opts, rest = commands.parse_command_line(['m', 'd', '--nproc', '4', '--epochs', '2', '--runner=builtin', '--dry-run',
                                         '-b', '8', '--model-kwargs', 'attn=cbam'])
    assert (opts.model, opts.data_dir, opts.nproc, opts.nnodes, opts.runner, opts.dry_run) == \
        ('m', 'd', '4', '1', 'builtin', True)
    assert rest == ['--epochs', '2', '-b', '8', '--model-kwargs', 'attn=cbam']
    assert commands.read_timm_flags(rest + ['--model-kwargs', 'attn=eca', 'rate=(0.3, 0.7)']).model_kwargs == {
        'attn': 'eca', 'rate': (0.3, 0.7)}
    monkeypatch.setenv('NPROC', 'gpu')
    monkeypatch.setenv('NNODES', '2')
    assert (commands.parse_command_line([])[0].nproc, commands.parse_command_line([])[0].nnodes) == ('gpu', '2')
    for bad, msg in ((['--nproc', '0'], 'positive integer'), (['--runner', 'x'], 'auto, timm or builtin'),
                     (['--nnodes'], '--nnodes.*expected one argument')):
        with pytest.raises(CliError, match=msg):
            commands.parse_command_line(bad)

    assert build_command('train', 'builtin', None, ['--epochs', '1']) == [
        sys.executable, '-m', 'timm_mrap.training.builtin.train', '--epochs', '1']
    cmd = build_command('train', 'timm', Path('/x/train.py'), ['-b', '8'], nproc='8')
    assert cmd[1:] == ['-m', 'torch.distributed.run', '--nproc_per_node=8', '--nnodes=1', '--standalone',
                       '-m', 'timm_mrap.training.launch', '/x/train.py', '-b', '8']
    with pytest.raises(CliError, match='NODE_RANK and MASTER_ADDR'):
        build_command('train', 'timm', Path('/x/train.py'), [], nproc='8', nnodes=2, env={})
    cmd = build_command('train', 'builtin', None, [], nproc='8', nnodes=2, env={'NODE_RANK': '1', 'MASTER_ADDR': 'h0'})
    assert '--node_rank=1' in cmd and '--master_addr=h0' in cmd and '--master_port=29500' in cmd
    with pytest.raises(CliError, match='one process'):
        build_command('validate', 'builtin', None, [], nproc='2')


def test_train_arguments(data, tmp_path, capsys, monkeypatch):
    rc, lines, err = _dry(['train', 'mobilenetv2_mrap', str(data), '--epochs', '1', '--dry-run'], capsys)
    assert rc == 0 and len(lines) == 1
    assert lines[0].split()[1:] == ['-m', 'timm_mrap.training.builtin.train', '--data-dir', str(data), '--model',
                                    'mobilenetv2_mrap', '--epochs', '1', '--num-classes', '2', '--device', 'cpu']
    assert "timm's train.py is not available" in err and 'TIMM_SCRIPTS_DIR' in err

    # timm's script found in TIMM_SCRIPTS_DIR: the launcher runs it; recipe -> --config; NPROC -> torchrun
    (tmp_path / 'train.py').write_text('pass\n')
    monkeypatch.setenv('TIMM_SCRIPTS_DIR', str(tmp_path))
    monkeypatch.setenv('NPROC', '2')
    rc, lines, _ = _dry(['train', 'mobilenetv2_mrap', str(data), '--recipe', 'digits_demo', '--device', 'cuda',
                         '--dry-run'], capsys)
    assert rc == 0
    assert ' -m torch.distributed.run --nproc_per_node=2 ' in lines[0]
    assert f' -m timm_mrap.training.launch {tmp_path / "train.py"} --data-dir ' in lines[0]
    assert '/recipes/digits_demo.yaml' in lines[0].split('--config ')[1]
    assert lines[0].endswith('--device cuda')  # the recipe sets num_classes; --device is the user's
    monkeypatch.delenv('NPROC')

    for argv, msg in (
            ([str(tmp_path / 'nope')], 'does not exist.*timm_mrap.training.datasets'),
            ([str(data), '--val-split', 'holdout'], "no split folder 'holdout'.*--val-split"),
            ([str(data), '--num-classes', '1'], '--num-classes 1 .*2 class folders'),
            ([str(data), 'extra'], "Unexpected argument 'extra'"),
            ([], 'MODEL and DATA_DIR'),
            ([str(data), '--recipe', 'nope'], 'No recipe'),
    ):
        rc, _, err = _dry(['train', 'mobilenetv2_mrap', '--dry-run', '--epochs', '1'] if not argv else
                          ['train', 'mobilenetv2_mrap', *argv, '--dry-run'], capsys)
        assert rc == 2 and 'Traceback' not in err
        assert __import__('re').search(msg, err), (msg, err)
    (data / 'validation' / 'cat').rename(data / 'validation' / '.cat')
    (data / 'validation' / 'dog').rename(data / 'validation' / '.dog')
    rc, _, err = _dry(['train', 'mobilenetv2_mrap', str(data), '--dry-run'], capsys)
    assert rc == 2 and 'has no class folders' in err


def test_demo_runs_the_recipe(tmp_path, capsys, monkeypatch):
    """train.sh alone: digits written once, then train and validate with the digits_demo recipe's model and size."""
    import yaml
    from timm_mrap.training.recipes import recipe_path
    recipe = yaml.safe_load(recipe_path('digits_demo').read_text())
    assert recipe['model'] in timm.list_models('*_mrap')  # the demo shows an MRAP model
    monkeypatch.setenv('TIMM_MRAP_DEMO_DIR', str(tmp_path / 'demo'))
    rc, lines, err = _dry(['train', '--dry-run'], capsys)
    assert rc == 0 and len(lines) == 2
    assert f"training {recipe['model']} from scratch, {recipe['epochs']} epochs at {recipe['img_size']} px" in err
    assert "(1437 train / 360 held-out images)" in err
    data = tmp_path / 'demo' / 'digits'
    assert sum(1 for _ in (data / 'validation').glob('*/*.png')) == 360
    train_cmd, validate_cmd = lines
    assert f' -m timm_mrap.training.builtin.train --data-dir {data} --model {recipe["model"]} --config ' in train_cmd
    assert f'--output {tmp_path / "demo" / "train"} --experiment digits-{recipe["model"]}-' in train_cmd
    experiment = train_cmd.split('--experiment ')[1].split()[0]
    assert validate_cmd == (f'validate.sh {recipe["model"]} {data} --checkpoint {tmp_path}/demo/train/{experiment}/'
                            f'model_best.pth.tar --img-size {recipe["img_size"]} --results-file '
                            f'{tmp_path}/demo/{experiment} --workers {recipe["workers"]}')

    # timm flags after no model / data: a shorter (or GPU) demo; --device reaches validation too
    rc, lines, _ = _dry(['train', '--epochs', '1', '--device', 'cuda', '--dry-run'], capsys)
    assert rc == 0 and lines[0].endswith('--epochs 1 --device cuda') and lines[1].endswith('--device cuda')


def test_checkpoint_kinds(tmp_path):
    model = timm.create_model('mobilenetv2_mrap', num_classes=5)
    train_ckpt = tmp_path / 'model_best.pth.tar'  # what timm's train.py saves (args is a Namespace)
    torch.save({'epoch': 3, 'arch': 'mobilenetv2_mrap', 'state_dict': model.state_dict(),
                'args': argparse.Namespace(lr=0.1), 'metric': 50.}, train_ckpt)
    assert checkpoint_args('mobilenetv2_mrap', str(train_ckpt), str(tmp_path)) == (
        'mobilenetv2_mrap', ['--checkpoint', str(train_ckpt), '--num-classes', '5'], 'timm')
    with pytest.raises(InputError, match='(?s)does not fit mobilenetv3_mrap.*--model mobilenetv2_mrap'):
        checkpoint_args('mobilenetv3_mrap', str(train_ckpt), str(tmp_path))
    with pytest.raises(InputError, match='--num-classes 7.*5 classes'):
        checkpoint_args('mobilenetv2_mrap', str(train_ckpt), str(tmp_path), num_classes=7)

    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / 'w.safetensors')
    assert checkpoint_args('mobilenetv2_mrap', str(tmp_path / 'w.safetensors'), str(tmp_path))[2] == 'timm'

    (tmp_path / 'broken.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(InputError, match='broken.pth'):
        checkpoint_args('mobilenetv2_mrap', str(tmp_path / 'broken.pth'), str(tmp_path))
    with pytest.raises(InputError, match='does not exist'):
        checkpoint_args('mobilenetv2_mrap', str(tmp_path / 'missing.pth'), str(tmp_path))


def test_checkpoint_of_another_attention_is_checked_with_model_kwargs(tmp_path):
    """validate.sh MODEL D --checkpoint F --model-kwargs attn=cbam: the checkpoint is checked against the CBAM model."""
    cbam = timm.create_model('mobilenetv3_mrap', num_classes=3, attn='cbam')
    path = tmp_path / 'cbam.pth.tar'
    torch.save({'arch': 'mobilenetv3_mrap', 'state_dict': cbam.state_dict()}, path)
    argv = ['--img-size', '32', '--model-kwargs', 'attn=cbam', '--device', 'cpu']
    assert commands.read_timm_flags(argv).model_kwargs == {'attn': 'cbam'}
    assert commands.read_timm_flags(['--img-size', '32']).model_kwargs == {}
    assert checkpoint_args('mobilenetv3_mrap', str(path), str(tmp_path), model_kwargs={'attn': 'cbam'})[1] == [
        '--checkpoint', str(path), '--num-classes', '3']
    with pytest.raises(InputError, match='--model-kwargs.*attn=cbam'):
        checkpoint_args('mobilenetv3_mrap', str(path), str(tmp_path))


def _reference_checkpoint(tmp_path):
    tensors, _ = load_fixture('mobilenetv2_mrap_reference')
    path = tmp_path / 'MRAP_V2.pth'  # the authors' layout: {'model_state_dict': {'module.backbone...': ...}}
    torch.save({'model_state_dict': {'module.' + k: v for k, v in fixture_state_dict(tensors).items()}}, path)
    return path, fixture_state_dict(tensors)


@pytest.mark.slow
def test_validate_sh_converts_reference_checkpoint(data, tmp_path):
    """validate.sh end to end: a reference checkpoint is converted on the fly and run through (a stand-in for) timm's
    validate.py via the launcher; the results land in JSON and CSV."""
    ref, ref_state = _reference_checkpoint(tmp_path)
    scripts = tmp_path / 'timm_scripts'
    scripts.mkdir()
    (scripts / 'validate.py').write_text(FAKE_VALIDATE)
    env = dict(os.environ, TIMM_SCRIPTS_DIR=str(scripts), PYTHON=sys.executable)
    res = subprocess.run([str(ROOT / 'validate.sh'), 'mobilenetv2_mrap', str(data), '--checkpoint', str(ref),
                          '--img-size', '64', '--results-file', str(tmp_path / 'res' / 'ref.json')],
                         env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert 'converted reference checkpoint' in res.stderr and '[timm_mrap.launch] timm' in res.stderr
    result = json.loads((tmp_path / 'res' / 'ref.json').read_text())
    assert result['num'] == 4 and result['num_classes'] == 10 and 0 <= result['top1'] <= 100
    assert result['checkpoint_kind'] == 'reference' and result['runner'] == 'timm'
    assert np.allclose(result['mean'], fold_data_bn(ref_state)[0], atol=1e-6)  # data_bn folded into mean
    header, row = (tmp_path / 'res' / 'ref.csv').read_text().splitlines()
    assert header.split(',')[:2] == ['model', 'top1'] and row.startswith('mobilenetv2_mrap,')


def test_shell_front_doors(data, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    res = subprocess.run([str(ROOT / 'train.sh'), '--help'], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and 'usage: ./train.sh' in res.stdout and '--nproc' in res.stdout
    res = subprocess.run([str(ROOT / 'validate.sh')], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and 'usage: ./validate.sh' in res.stdout


def test_validate_arguments(data, tmp_path, capsys):
    rc, _, err = _dry(['validate', 'mobilenetv2_mrap', str(data), '--dry-run'], capsys)
    assert rc == 2 and '--checkpoint FILE' in err
    rc, _, err = _dry(['validate', 'mobilenetv2_mrap', str(data), '--checkpoint', str(tmp_path / 'x.pth')], capsys)
    assert rc == 2 and 'does not exist' in err
    rc, lines, _ = _dry(['validate', 'mobilenetv2_mrap', str(data), '--pretrained', '--dry-run'], capsys)
    assert rc == 0 and lines[0].split()[1:] == ['-m', 'timm_mrap.training.builtin.validate', '--data-dir', str(data),
                                                '--model', 'mobilenetv2_mrap', '--pretrained', '--device', 'cpu']
    rc, _, err = _dry(['validate', 'mobilenetv2_mrap', str(data), '--pretrained', '--num-classes', '1'], capsys)
    assert rc == 2 and '2 class folders' in err and 'classifies 1' in err
    # validate.sh writes PREFIX.json and PREFIX.csv: a single --results-format is refused, not dropped
    rc, lines, err = _dry(['validate', 'mobilenetv2_mrap', str(data), '--pretrained', '--results-format', 'json',
                           '--dry-run'], capsys)
    assert rc == 2 and '--results-format' in err and not lines


def test_split_folders_found_by_timms_rule(data, capsys):
    """A val/ folder serves --val-split validation, as timm's create_dataset finds it."""
    from timm.data import create_dataset
    (data / 'validation').rename(data / 'val')
    rc, lines, _ = _dry(['train', 'mobilenetv2_mrap', str(data), '--dry-run'], capsys)
    assert rc == 0 and '--num-classes 2' in lines[0]
    assert len(create_dataset('', root=str(data), split='validation')) == 4
    (data / 'val').rename(data / 'holdout')
    rc, _, err = _dry(['train', 'mobilenetv2_mrap', str(data), '--dry-run'], capsys)
    assert rc == 2 and "'validation'" in err and '--val-split' in err
