"""python -m timm_mrap.compare: a real grid on scikit-learn's digits (2 attentions x 2 seeds, 1 epoch at 32 px), its
files and statistics, skipping finished runs, resuming an interrupted one, and bad input stopping before training."""
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import timm
import timm_mrap  # noqa: F401
from timm_mrap.complexity import count_params
from timm_mrap.training.comparison import CompareConfig, CompareError, make_plan, run_state

ROOT = Path(__file__).resolve().parents[1]
MODEL = 'mobilenetv3_mrap'
FLAGS = ['--img-size', '32', '-b', '64', '-j', '0', '--opt', 'adamw', '--lr', '4e-3', '--warmup-epochs', '0',
         '--progress', 'log', '--log-interval', '50', '--runner', 'builtin', '--device', 'cpu']


@pytest.fixture(scope='module')
def digits(tmp_path_factory) -> Path:
    from timm_mrap.training.datasets import write_digits_imagefolder
    root = tmp_path_factory.mktemp('compare') / 'digits'
    write_digits_imagefolder(str(root))  # 1,437 train / 360 validation images, 10 classes, 32 px
    for split, keep in (('train', 24), ('validation', 8)):  # a grid of real runs, not a benchmark: 240 / 80 images
        for folder in (root / split).iterdir():
            for image in sorted(folder.glob('*.png'))[keep:]:
                image.unlink()
    return root


def _compare(args, cwd=ROOT) -> subprocess.CompletedProcess:
    # PYTHONPATH: the trainer, validator and benchmark processes import this checkout's timm_mrap too
    env = {**os.environ, 'TIMM_SCRIPTS_OFFLINE': '1', 'OMP_NUM_THREADS': str(torch.get_num_threads()),
           'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, '-m', 'timm_mrap.compare', *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def _rows(path: Path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _summary_cells(text: str, attn: str):
    """(seeds, mean, std, vs none) of one attention in summary.md."""
    m = re.search(rf'^\| {attn} \| (\d+) \| (\d+\.\d\d) ± (\d+\.\d\d) \| ([^|]*) \|', text, re.M)
    assert m, text
    return int(m.group(1)), float(m.group(2)), float(m.group(3)), m.group(4).strip()


@pytest.mark.slow
def test_grid_end_to_end_then_skip_then_resume(digits, tmp_path):
    out = tmp_path / 'grid'
    argv = [digits, '--model', MODEL, '--attn', 'none', 'mrap', '--seeds', '0', '1', '--epochs', '1',
            '--output', out, *FLAGS]
    first = _compare(argv)
    assert first.returncode == 0, first.stderr[-3000:]
    for i in range(1, 5):
        assert f'[compare] run {i}/4: ' in first.stderr
    assert '(3 more after this)' in first.stderr and '(0 more after this, about' in first.stderr

    # results.csv: one row per run, seed-major, with the validator's top-1 and the counted params
    rows = _rows(out / 'results.csv')
    assert [(r['attn'], int(r['seed'])) for r in rows] == [('none', 0), ('mrap', 0), ('none', 1), ('mrap', 1)]
    assert list(rows[0]) == ['attn', 'seed', 'top1', 'top5', 'epochs', 'best_epoch', 'params', 'gmacs', 'wall_s',
                             'run_dir']
    for r in rows:
        run_dir = Path(r['run_dir'])
        assert (run_dir / 'model_best.pth.tar').is_file() and int(r['epochs']) == 1 and int(r['best_epoch']) == 0
        assert float(r['top1']) == json.loads((run_dir / 'validate.json').read_text())['top1']
        assert int(r['params']) == count_params(timm.create_model(MODEL, num_classes=10, attn=r['attn']))
        assert float(r['gmacs']) > 0 and float(r['wall_s']) > 0
        assert torch.load(run_dir / 'last.pth.tar', weights_only=False)['args'].seed == int(r['seed'])
    weights = [torch.load(Path(r['run_dir']) / 'model_best.pth.tar', weights_only=False)['state_dict'] for r in rows]
    assert not torch.equal(weights[0]['classifier.weight'], weights[2]['classifier.weight'])  # the seeds differ
    assert float(rows[1]['gmacs']) > float(rows[0]['gmacs'])

    # summary.md: mean ± sample std over the seeds, in the order given, difference to none
    text = (out / 'summary.md').read_text()
    assert text.index('| none |') < text.index('| mrap |')
    means = {}
    for attn in ('none', 'mrap'):
        top1 = [float(r['top1']) for r in rows if r['attn'] == attn]
        seeds, mean, std, delta = _summary_cells(text, attn)
        assert (seeds, mean, std) == (2, round(statistics.mean(top1), 2), round(statistics.stdev(top1), 2))
        means[attn] = statistics.mean(top1)
    assert _summary_cells(text, 'mrap')[3] == f'{means["mrap"] - means["none"]:+.2f}'
    latency = _rows(out / 'latency' / 'results.csv')
    assert [r['variant'] for r in latency] == [f'{MODEL}:none', f'{MODEL}:mrap'] and latency[0]['relative'] == '1'
    assert re.search(rf'\| mrap \|.*\| {float(latency[1]["relative"]):.2f}x \|', text)
    assert (out / 'top1_vs_latency.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    best = max(means, key=means.get)
    assert first.stdout.strip().splitlines()[-1].startswith(f'Compare done: best attention {best}, top-1 ')
    assert f'Results: {out}/ (results.csv, summary.md, top1_vs_latency.png)' in first.stdout

    # the same command again: nothing is trained, the reports are rewritten from the finished runs
    stamps = {r['run_dir']: (Path(r['run_dir']) / 'run.json').stat().st_mtime_ns for r in rows}
    again = _compare(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert '4 already done, 0 to run' in again.stderr and 'Scheduled epochs' not in again.stdout + again.stderr
    assert '(0 run now, 4 already done)' in again.stdout
    assert {r: (Path(r) / 'run.json').stat().st_mtime_ns for r in stamps} == stamps
    assert [r['top1'] for r in _rows(out / 'results.csv')] == [r['top1'] for r in rows]

    # another recipe in the same folder stops before training, naming the difference and the fix
    other = _compare([digits, '--model', MODEL, '--attn', 'none', '--seeds', '0', '--epochs', '2', '--output', out,
                      *FLAGS])
    assert other.returncode == 2 and 'another grid' in other.stderr and 'epochs: 1 there, 2 now' in other.stderr
    assert '--overwrite' in other.stderr and 'Traceback' not in other.stderr

    # a grid interrupted after epoch 0 of 2 (a copy of one run, before validation): the rerun resumes it
    resumed = tmp_path / 'resumed'
    shutil.copytree(out / 'runs' / 'none-seed0', resumed / 'runs' / 'none-seed0')
    for name in ('run.json', 'validate.json', 'validate.csv'):
        (resumed / 'runs' / 'none-seed0' / name).unlink()
    manifest = json.loads((out / 'compare.json').read_text())
    (resumed / 'compare.json').write_text(json.dumps({**manifest, 'epochs': 2}))
    argv = [digits, '--model', MODEL, '--attn', 'none', '--seeds', '0', '--epochs', '2', '--output', resumed, *FLAGS]
    third = _compare(argv)
    assert third.returncode == 0, third.stderr[-3000:]
    assert 'run 1/1: attn=none seed=0, resuming from last.pth.tar' in third.stderr
    (row,) = _rows(resumed / 'results.csv')
    assert int(row['epochs']) == 2 and float(row['wall_s']) > float(rows[0]['wall_s'])
    summary = _rows(resumed / 'runs' / 'none-seed0' / 'summary.csv')
    assert [int(r['epoch']) for r in summary] == [0, 1]  # epoch 0 kept, only epoch 1 trained


def test_run_state(tmp_path):
    assert run_state(tmp_path, 2) == 'new'
    torch.save({'epoch': 0, 'state_dict': {}}, tmp_path / 'last.pth.tar')
    assert run_state(tmp_path, 2) == 'resume' and run_state(tmp_path, 1) == 'trained'
    (tmp_path / 'run.json').write_text('{}')
    assert run_state(tmp_path, 2) == 'done'


@pytest.fixture
def small_data(tmp_path) -> Path:
    from PIL import Image
    for split in ('train', 'validation'):
        for c in ('a', 'b'):
            (tmp_path / 'data' / split / c).mkdir(parents=True)
            Image.new('RGB', (8, 8)).save(tmp_path / 'data' / split / c / '0.png')
    return tmp_path / 'data'


@pytest.mark.parametrize('change, message', [
    (dict(attns=['none', 'sse']), r"Unknown attention \['sse'\].*mrap.*none"),
    (dict(attns=['se', 'se']), 'each attention once'),
    (dict(data_dir='missing'), 'missing does not exist'),
    (dict(model='resnet18'), r"resnet18.*attn= choices"),
    (dict(model=None), '--model'),
    (dict(recipe='nope'), 'No recipe'),
    (dict(train_args=['--seed', '3']), '--seed.*--seeds'),
    (dict(train_args=['--model-kwargs', 'attn=cbam']), 'attn=cbam.*--attn'),
    (dict(train_args=['--nproc', '0']), '--nproc.*positive integer'),
])
def test_bad_input_stops_before_training(small_data, tmp_path, change, message):
    cfg = CompareConfig(**{**dict(data_dir=str(small_data), model=MODEL, attns=['none', 'mrap'], seeds=[0],
                                  output=str(tmp_path / 'out'), train_args=['--img-size', '32']), **change})
    with pytest.raises(CompareError, match=message):
        make_plan(cfg)
    assert not (tmp_path / 'out').exists()


def test_every_attention_choice_is_planned(small_data, tmp_path):
    """The grid takes every ``attn`` choice (the command line's ``--attn`` lists them in its help)."""
    from timm_mrap.compare import build_compare_parser
    from timm_mrap.layers import ATTN_CHOICES
    args, _ = build_compare_parser().parse_known_args([str(small_data), '--attn', *ATTN_CHOICES])
    cfg = CompareConfig(data_dir=str(small_data), model='mobilenetv3_small_mrap', attns=args.attn, seeds=[0],
                        output=str(tmp_path / 'out'), train_args=['--img-size', '32'])
    plan = make_plan(cfg)
    assert list(plan.complexity) == list(ATTN_CHOICES)
    params = {a: p for a, (p, _) in plan.complexity.items()}
    assert params['simam'] == params['none'] < params['eca'] < params['mrap']  # SimAM: no parameters; ECA: a few
    assert all(macs > 0 for _, macs in plan.complexity.values())


def test_output_of_another_model_needs_overwrite(small_data, tmp_path, capsys):
    from timm_mrap.compare import main
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'compare.json').write_text(json.dumps({'model': 'mobilenetv2_mrap', 'recipe': None, 'epochs': 1}))
    argv = [str(small_data), '--model', MODEL, '--attn', 'none', '--epochs', '1', '--output', str(out),
            '--img-size', '32']
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert 'another grid' in err and "model: 'mobilenetv2_mrap' there, 'mobilenetv3_mrap' now" in err
    assert '--overwrite' in err and not (out / 'runs').exists()
    plan = make_plan(CompareConfig(str(small_data), MODEL, ['none'], [0], epochs=1, output=str(out), overwrite=True,
                                   train_args=['--img-size', '32']))
    assert plan.epochs == 1 and plan.num_classes == 2 and plan.img_size == 32
    (out / 'compare.json').unlink()
    (out / 'notes.txt').write_text('mine')
    assert main(argv) == 2 and 'not empty' in capsys.readouterr().err


def test_reports_without_matplotlib_skip_the_plot(small_data, tmp_path, monkeypatch):
    from timm_mrap.training.compare_report import summarize_grid, write_reports
    plan = make_plan(CompareConfig(str(small_data), MODEL, ['none', 'eca'], [0, 1, 2], epochs=1,
                                   output=str(tmp_path / 'out'), train_args=['--img-size', '32']))
    (tmp_path / 'out').mkdir()
    top1 = {'none': [50., 60., 70.], 'eca': [80., 80., 83.]}
    rows = [dict(attn=a, seed=s, top1=top1[a][s], top5=100., epochs=1, best_epoch=0, params=plan.complexity[a][0],
                 gmacs=plan.complexity[a][1], wall_s=1., run_dir='') for s in (0, 1, 2) for a in ('none', 'eca')]
    summary = summarize_grid(rows, ['eca', 'none'], {'none': dict(relative=1., median_ms=2.),
                                                'eca': dict(relative=1.25, median_ms=2.5)})
    assert [s['attn'] for s in summary] == ['eca', 'none']
    assert summary[0]['top1_std'] == pytest.approx(statistics.stdev([80., 80., 83.]))
    assert summary[0]['delta_none'] == pytest.approx(81. - 60.) and summary[1]['top1_std'] == pytest.approx(10.)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib raises ImportError
    notes = []
    paths = write_reports(plan, rows, summary, log=notes.append)
    assert set(paths) == {'csv', 'summary'} and not (tmp_path / 'out' / 'top1_vs_latency.png').exists()
    assert notes == ['[compare] no plot: matplotlib is not installed (pip install "timm-mrap[plot]")']
    text = paths['summary'].read_text()
    assert _summary_cells(text, 'eca') == (3, 81.0, 1.73, '+21.00') and '| 1.25x |' in text
    assert len(_rows(paths['csv'])) == 6
