""" ``train.sh`` with no arguments: scikit-learn's digits as an ImageFolder, train, validate, print the top-1

The model, image size and schedule come from the ``digits_demo`` recipe; timm flags given to ``train.sh`` override it
(``./train.sh --epochs 1 --device cuda``). ``TIMM_MRAP_DEMO_DIR`` replaces ``output/demo``.
"""
import os
import shlex
import time
from pathlib import Path
from typing import Sequence

from .commands import parse_command_line, read_timm_flags, train_command, validate_command
from .datasets import write_digits_imagefolder
from .recipes import read_config, recipe_path
from .runner import log

__all__ = ['run_demo']


def run_demo(argv: Sequence[str]) -> int:
    """Write the digits, train with the ``digits_demo`` recipe, validate ``model_best.pth.tar`` on the held-out split.

    The last line printed says the top-1 and where the run (checkpoints, ``summary.csv``) and the results are.
    """
    opts, extra = parse_command_line(argv)  # extra: timm flags that override the recipe
    start = time.time()
    recipe = recipe_path('digits_demo')
    cfg = read_config(str(recipe))
    model, img_size = cfg['model'], str(cfg['img_size'])
    root = Path(os.environ.get('TIMM_MRAP_DEMO_DIR', 'output/demo'))
    data = root / 'digits'
    counts = write_digits_imagefolder(str(data))
    log(f"demo: scikit-learn's digits in {data} ({counts['train']} train / {counts['validation']} held-out images); "
        f"training {model} from scratch, {cfg['epochs']} epochs at {img_size} px ({recipe.name})")
    experiment = f'digits-{model}-{time.strftime("%Y%m%d-%H%M%S")}'
    run_dir = root / 'train' / experiment
    layer = [f'--runner={opts.runner}', f'--nproc={opts.nproc}'] + (['--dry-run'] if opts.dry_run else [])
    rc = train_command([model, str(data), '--config', str(recipe), '--output', str(root / 'train'), '--experiment',
                        experiment, *extra, *layer])
    if rc != 0:
        return rc
    device = read_timm_flags(extra).device
    validate_args = [model, str(data), '--checkpoint', str(run_dir / 'model_best.pth.tar'), '--img-size', img_size,
                     '--results-file', str(root / experiment), '--workers', str(cfg.get('workers', 2)),
                     *(['--device', device] if device else [])]
    if opts.dry_run:
        print(shlex.join(['validate.sh', *validate_args]))
        return 0
    rc, result = validate_command([*validate_args, f'--runner={opts.runner}'])
    if rc != 0 or result is None:
        return rc or 1
    minutes, seconds = divmod(int(time.time() - start), 60)
    print(f'Demo done: {model} top-1 {float(result["top1"]):.1f}% on the {counts["validation"]} held-out digits, '
          f'{minutes} min {seconds} s in all. Run: {run_dir}/ (model_best.pth.tar, summary.csv); results: '
          f'{root / experiment}.json and .csv', flush=True)
    return 0
