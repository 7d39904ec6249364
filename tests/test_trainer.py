"""Built-in trainer / validator (timm_mrap.training.builtin.train / .validate) on a tiny real data set.

The data set is a slice of scikit-learn's bundled handwritten digits (4 classes, 4 train + 2 validation images each),
written as an ImageFolder and trained at 32 px for a few steps: enough to exercise the real code paths (timm's
loaders, augmentation, optimizer, scheduler, EMA, checkpoint saver, resume) in seconds.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch
import yaml

import timm
import timm_mrap  # noqa: F401
from timm_mrap.training.builtin import train as train_mod
from timm_mrap.training.builtin import validate as validate_mod
from timm_mrap.training.builtin.args import parse_script_args

ROOT = Path(__file__).resolve().parents[1]
MODEL = 'mobilenetv2_mrap'
CLASSES = 4
TRAIN_FLAGS = ['--model', MODEL, '--img-size', '32', '-b', '8', '-j', '0', '--opt', 'adamw', '--lr', '2e-3',
               '--warmup-epochs', '1', '--progress', 'log', '--log-interval', '1', '--device', 'cpu']


def _write_digits(root: Path, per_class_train: int = 4, per_class_val: int = 2) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    counts = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if label >= CLASSES:
            continue
        n = counts.get(label, 0)
        if n >= per_class_train + per_class_val:
            continue
        counts[label] = n + 1
        split = 'train' if n < per_class_train else 'validation'
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype('uint8')).save(folder / f'{i:04d}.png')
    return root


@pytest.fixture(scope='module')
def digits(tmp_path_factory) -> Path:
    return _write_digits(tmp_path_factory.mktemp('digits'))


def _train(argv: List[str]) -> int:
    return train_mod.main(argv)


def _validate(argv: List[str], capsys) -> dict:
    assert validate_mod.main(argv) == 0
    out = capsys.readouterr().out
    assert '--result\n' in out, out
    return json.loads(out.split('--result\n', 1)[1])


def _summary(path: Path) -> List[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _load(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def test_config_yaml_gives_defaults_and_command_line_wins(tmp_path, caplog):
    cfg = tmp_path / 'recipe.yaml'
    cfg.write_text(yaml.safe_dump({
        'model': MODEL, 'opt': 'adamw', 'lr': 0.002, 'epochs': 7, 'scale': [0.6, 1.0], 'hflip': 0.0,
        'model_kwargs': {'attn': 'cbam'}, 'aug_splits': 3,
    }))
    args, args_text = parse_script_args('train', ['--config', str(cfg), '--epochs', '3', '--data-dir', 'D'])
    assert (args.model, args.opt, args.lr, args.scale, args.hflip) == (MODEL, 'adamw', 0.002, [0.6, 1.0], 0.0)
    assert args.epochs == 3 and args.data_dir == 'D' and args.model_kwargs == {'attn': 'cbam'}
    assert yaml.safe_load(args_text)['epochs'] == 3
    assert 'aug_splits' in caplog.text  # a timm key the fallback does not implement is named, not silently used
    # without a config, the defaults are timm train.py's
    args, _ = parse_script_args('train', [])
    assert (args.batch_size, args.lr, args.lr_base, args.opt, args.sched, args.epochs, args.warmup_epochs) == \
        (128, None, 0.1, 'sgd', 'cosine', 300, 5)
    assert (args.smoothing, args.hflip, args.scale, args.decay_milestones, args.model_ema_decay) == \
        (0.1, 0.5, [0.08, 1.0], [90, 180, 270], 0.9998)


def test_unsupported_timm_flag_is_named(capsys):
    with pytest.raises(SystemExit) as e:
        parse_script_args('train', ['--data-dir', 'D', '--jsd-loss'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert '--jsd-loss' in err and 'TIMM_SCRIPTS_DIR' in err


@pytest.mark.slow
def test_train_checkpoints_resume_and_validate(digits, tmp_path, capsys):
    out = tmp_path / 'out'
    flags = TRAIN_FLAGS + ['--data-dir', str(digits), '--output', str(out), '--experiment', 'run', '--model-ema',
                           '--model-ema-decay', '0.9', '--channels-last', '--aa', 'rand-m9-mstd0.5', '--reprob', '0.25',
                           '--mixup', '0.2', '--cutmix', '0.2', '--hflip', '0', '--scale', '0.6', '1.0']
    assert _train(flags + ['--epochs', '1']) == 0
    run = out / 'run'
    for name in ('args.yaml', 'summary.csv', 'last.pth.tar', 'model_best.pth.tar', 'checkpoint-0.pth.tar'):
        assert (run / name).is_file(), name
    saved_args = yaml.safe_load((run / 'args.yaml').read_text())
    assert saved_args['model'] == MODEL and saved_args['mixup'] == 0.2 and saved_args['num_classes'] is None
    rows = _summary(run / 'summary.csv')
    assert [int(r['epoch']) for r in rows] == [0]
    assert list(rows[0]) == ['epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr']

    last = _load(run / 'last.pth.tar')
    assert {'state_dict', 'state_dict_ema', 'optimizer', 'epoch', 'arch', 'args', 'metric'} <= set(last)
    assert last['epoch'] == 0 and last['arch'] == MODEL and last['args'].num_classes == CLASSES
    model = timm.create_model(MODEL, num_classes=CLASSES)
    model.load_state_dict(last['state_dict'])
    model.load_state_dict(last['state_dict_ema'])
    best = _load(run / 'model_best.pth.tar')
    assert best['metric'] == max(float(r['eval_top1']) for r in rows)

    # resume the finished run for one more epoch, now under bfloat16 autocast
    assert _train(flags + ['--epochs', '2', '--resume', str(run / 'last.pth.tar'), '--amp', '--amp-dtype',
                           'bfloat16']) == 0
    rows = _summary(run / 'summary.csv')
    assert [int(r['epoch']) for r in rows] == [0, 1]
    assert (run / 'checkpoint-1.pth.tar').is_file() and _load(run / 'last.pth.tar')['epoch'] == 1
    best = _load(run / 'model_best.pth.tar')
    assert best['metric'] == max(float(r['eval_top1']) for r in rows)

    # the validator reproduces the trainer's (EMA) eval of the best epoch, and writes JSON and CSV like timm
    json_file, csv_file = tmp_path / 'res.json', tmp_path / 'res.csv'
    common = ['--data-dir', str(digits), '--model', MODEL, '--img-size', '32', '-j', '0', '--device', 'cpu',
              '--checkpoint', str(run / 'model_best.pth.tar'), '--use-ema']
    result = _validate(common + ['--results-file', str(json_file), '--results-format', 'json'], capsys)
    assert result['top1'] == pytest.approx(best['metric'], abs=1e-3)
    assert result['top1_err'] == pytest.approx(100 - result['top1'], abs=1e-3)
    assert result['model'] == MODEL and result['img_size'] == 32
    assert json.loads(json_file.read_text()) == result
    _validate(common + ['--results-file', str(csv_file)], capsys)
    (row,) = _summary(csv_file)
    assert float(row['top1']) == result['top1'] and row['interpolation'] == result['interpolation']


@pytest.mark.slow
def test_killed_mid_epoch_then_resumed_finishes(digits, tmp_path):
    out = tmp_path / 'out'
    flags = TRAIN_FLAGS + ['--data-dir', str(digits), '--output', str(out), '--experiment', 'run', '-b', '4',
                           '--epochs', '2']  # 4 steps per epoch
    proc = subprocess.Popen([sys.executable, '-m', 'timm_mrap.training.builtin.train'] + flags, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    deadline = time.time() + 600
    try:
        for line in proc.stdout:
            log.append(line)
            if line.startswith('Train: 1 [   1/'):  # epoch 0 checkpointed, epoch 1 part-way through
                proc.send_signal(signal.SIGKILL)
                break
            assert time.time() < deadline, ''.join(log)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, ''.join(log)
    run = out / 'run'
    assert _load(run / 'last.pth.tar')['epoch'] == 0
    assert [int(r['epoch']) for r in _summary(run / 'summary.csv')] == [0]

    assert _train(flags + ['--resume', str(run / 'last.pth.tar')]) == 0
    rows = _summary(run / 'summary.csv')
    assert [int(r['epoch']) for r in rows] == [0, 1]
    assert _load(run / 'last.pth.tar')['epoch'] == 1
    best = _load(run / 'model_best.pth.tar')
    assert best['metric'] == max(float(r['eval_top1']) for r in rows)
    model = timm.create_model(MODEL, num_classes=CLASSES)
    model.load_state_dict(best['state_dict'])
    assert sorted(p.name for p in run.glob('checkpoint-*.pth.tar')) == ['checkpoint-0.pth.tar', 'checkpoint-1.pth.tar']


@pytest.mark.slow
def test_ddp_under_torchrun_two_cpu_processes(digits, tmp_path):
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '-m', 'timm_mrap.training.builtin.train'] + TRAIN_FLAGS + [
        '--data-dir', str(digits), '--output', str(out), '--experiment', 'ddp', '-b', '4', '--epochs', '1',
        '--model-ema']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert 'Process 0, total 2' in log and 'Process 1, total 2' in log
    run = out / 'ddp'
    assert [int(r['epoch']) for r in _summary(run / 'summary.csv')] == [0]
    ckpt = _load(run / 'model_best.pth.tar')
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])  # saved unwrapped from DDP, as timm does
    model = timm.create_model(MODEL, num_classes=CLASSES)
    model.load_state_dict(ckpt['state_dict_ema'])


def test_missing_data_folder_is_a_clear_error_not_a_traceback(tmp_path):
    missing = tmp_path / 'nope'
    proc = subprocess.run(
        [sys.executable, '-m', 'timm_mrap.training.builtin.train', '--data-dir', str(missing), '--model', MODEL],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f'{missing} does not exist' in proc.stderr and '--data-dir' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_tar_archive_is_read_by_timm_not_checked_as_a_folder(tmp_path):
    """A .tar of class folders (timm's ImageTar) passes the folder checks of both runners untouched."""
    import tarfile
    from PIL import Image
    from timm_mrap.training.input_checks import check_data_dir, create_checked_dataset
    for name in ('a', 'b'):
        (tmp_path / 'src' / name).mkdir(parents=True)
        for i in range(3):
            Image.new('RGB', (8, 8)).save(tmp_path / 'src' / name / f'{i}.png')
    with tarfile.open(tmp_path / 'data.tar', 'w') as tar:
        for name in ('a', 'b'):
            tar.add(tmp_path / 'src' / name, arcname=name)
    assert len(create_checked_dataset('', str(tmp_path / 'data.tar'), 'train', '--train-split')) == 6
    assert check_data_dir(str(tmp_path / 'data.tar'), [('train', '--train-split')]) == []


def test_empty_data_folder(tmp_path, capsys):
    (tmp_path / 'train' / 'a').mkdir(parents=True)
    (tmp_path / 'validation' / 'a').mkdir(parents=True)
    assert _train(TRAIN_FLAGS + ['--data-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "split 'train'" in err and str(tmp_path) in err and '--data-dir' in err  # timm's reason, with context


def test_missing_validation_split(digits, tmp_path, capsys):
    (tmp_path / 'train').symlink_to(digits / 'train')
    assert _train(TRAIN_FLAGS + ['--data-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'validation'" in err and '--val-split' in err


def test_wrong_num_classes(digits, capsys):
    assert _train(TRAIN_FLAGS + ['--data-dir', str(digits), '--num-classes', '3']) == 2
    err = capsys.readouterr().err
    assert f'{CLASSES} class folders' in err and f'--num-classes {CLASSES}' in err


@pytest.fixture
def other_arch_checkpoint(tmp_path) -> Path:
    path = tmp_path / 'v1.pth.tar'
    model = timm.create_model('mobilenetv1_mrap', num_classes=CLASSES)
    torch.save({'state_dict': model.state_dict(), 'arch': 'mobilenetv1_mrap', 'epoch': 0, 'version': 2}, path)
    return path


def test_checkpoint_of_another_architecture(digits, other_arch_checkpoint, capsys):
    argv = ['--data-dir', str(digits), '--model', MODEL, '--img-size', '32', '-j', '0', '--device', 'cpu',
            '--checkpoint', str(other_arch_checkpoint)]
    assert validate_mod.main(argv) == 2
    err = capsys.readouterr().err
    assert f'--checkpoint {other_arch_checkpoint} does not fit {MODEL}' in err
    assert '--model mobilenetv1_mrap' in err
    # the same for --resume in the trainer
    assert _train(TRAIN_FLAGS + ['--data-dir', str(digits), '--resume', str(other_arch_checkpoint)]) == 2
    assert f'--resume {other_arch_checkpoint} does not fit {MODEL}' in capsys.readouterr().err


def test_classifier_size_mismatch_names_num_classes(digits, tmp_path, capsys):
    path = tmp_path / 'ten.safetensors'
    from safetensors.torch import save_file
    save_file(timm.create_model(MODEL, num_classes=10).state_dict(), str(path))
    argv = ['--data-dir', str(digits), '--model', MODEL, '--img-size', '32', '-j', '0', '--device', 'cpu',
            '--checkpoint', str(path), '--num-classes', str(CLASSES)]
    assert validate_mod.main(argv) == 2
    err = capsys.readouterr().err
    assert '10-class classifier' in err and '--num-classes 10' in err
    # without --num-classes the class count is read off the checkpoint (10 >= 4 folders), so it validates
    result = _validate(argv[:-2], capsys)
    assert result['model'] == MODEL and 0 <= result['top1'] <= 100


def test_validator_takes_a_hub_folder(digits, tmp_path, capsys):
    """A Hub folder as --checkpoint: the launcher and the built-in validator read it the same way."""
    from timm_mrap.checkpoint import save_hub_folder
    model = timm.create_model(MODEL, num_classes=CLASSES)
    save_hub_folder(model, tmp_path / 'folder')
    argv = ['--data-dir', str(digits), '--model', MODEL, '--img-size', '32', '-j', '0', '--device', 'cpu',
            '--checkpoint', str(tmp_path / 'folder')]
    result = _validate(argv, capsys)
    params = sum(p.numel() for p in model.parameters())
    assert result['model'] == MODEL and result['param_count'] == round(params / 1e6, 2)


def test_existing_experiment_is_not_overwritten(digits, tmp_path, capsys):
    run = tmp_path / 'out' / 'run'
    run.mkdir(parents=True)
    (run / 'last.pth.tar').write_bytes(b'earlier run')
    assert _train(TRAIN_FLAGS + ['--data-dir', str(digits), '--output', str(tmp_path / 'out'), '--experiment',
                                 'run', '--epochs', '1']) == 2
    err = capsys.readouterr().err
    assert 'checkpoints' in err and '--overwrite' in err and '--resume' in err
    assert (run / 'last.pth.tar').read_bytes() == b'earlier run'


def test_corrupt_image_is_skipped_with_a_warning_naming_it(digits, tmp_path, capsys, caplog):
    val = tmp_path / 'data' / 'validation'
    for src in sorted((digits / 'validation').rglob('*.png')):
        dst = val / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    bad = sorted(val.rglob('*.png'))[0]
    bad.write_bytes(b'not a png')
    model = timm.create_model(MODEL, num_classes=CLASSES)
    ckpt = tmp_path / 'm.pth.tar'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    result = _validate(['--data-dir', str(tmp_path / 'data'), '--model', MODEL, '--img-size', '32', '-j', '0',
                        '--device', 'cpu', '--checkpoint', str(ckpt)], capsys)
    assert 0 <= result['top1'] <= 100
    assert any('Skipped sample' in r.getMessage() and str(bad) in r.getMessage() for r in caplog.records)
