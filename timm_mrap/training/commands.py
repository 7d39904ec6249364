""" The commands behind ``train.sh`` and ``validate.sh``: read the command line, check the data, run the runner
(:mod:`.runner`). This layer's options are listed in :mod:`.cli`; everything else goes to the runner as it is.
"""
import argparse
import itertools
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from timm.utils import ParseKwargs

from ..errors import CliError
from .input_checks import check_data_dir, folder_num_classes
from .recipes import read_config, recipe_path
from .results import parse_result, write_result_file
from .runner import build_command, checkpoint_args, log, resolve_runner, run_command

__all__ = ['parse_command_line', 'read_timm_flags', 'train_command', 'validate_command']

TRAIN_USAGE = 'usage: train.sh [MODEL DATA_DIR [--recipe NAME] [--nproc N] [--nnodes N] [timm train.py flags...]]'
VALIDATE_USAGE = ('usage: validate.sh MODEL DATA_DIR [--checkpoint F | --pretrained] [--results-file PREFIX] '
                  '[timm validate.py flags...]')
# timm flags this layer reads (to check the data and pick defaults), with timm's defaults; they still go to the runner
_READ_FLAGS = {'--model': None, '--data-dir': None, '-c,--config': None, '-d,--dataset': None, '--train-split': 'train',
               '--val-split': 'validation', '--split': 'validation', '--img-size': None, '--device': None,
               '--class-map': None}


class _Parser(argparse.ArgumentParser):
    """A partial parser (``parse_known_args``) that raises :class:`CliError` instead of exiting."""

    def __init__(self):
        super().__init__(add_help=False, allow_abbrev=False)

    def error(self, message: str):
        raise CliError(message)


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise argparse.ArgumentTypeError(f'must be {what}, not {value!r}')
        return value
    return check


def parse_command_line(argv: Sequence[str], validate: bool = False) -> Tuple[argparse.Namespace, List[str]]:
    """This layer's options, ``MODEL DATA_DIR`` (the first two positional arguments) and the runner's flags.

    ``--model`` / ``--data-dir`` stand in for the positional arguments; ``validate`` also takes ``--checkpoint``,
    ``--results-file`` and ``--results-format`` out of the runner's flags.
    """
    parser = _Parser()
    parser.add_argument('--nproc', default=os.environ.get('NPROC', '1'),
                        type=_matching(r'gpu|[1-9]\d*', 'a positive integer or "gpu" (env NPROC)'))
    parser.add_argument('--nnodes', default=os.environ.get('NNODES', '1'),
                        type=_matching(r'[1-9]\d*', 'a positive integer (env NNODES)'))
    parser.add_argument('--runner', default=os.environ.get('TIMM_MRAP_RUNNER', 'auto'),
                        type=_matching('auto|timm|builtin', 'auto, timm or builtin (env TIMM_MRAP_RUNNER)'))
    parser.add_argument('--recipe')
    parser.add_argument('--dry-run', action='store_true')
    validate_flags = ('--checkpoint', '--results-file', '--results-format') if validate else ()
    for flag in ('--model', '--data-dir', *validate_flags):
        parser.add_argument(flag)
    opts, rest = parser.parse_known_args(argv)
    positionals = list(itertools.takewhile(lambda arg: not arg.startswith('-'), rest))
    if len(positionals) > 2:
        raise CliError(f'Unexpected argument {positionals[2]!r} after MODEL DATA_DIR; timm flags start with --.')
    opts.model = positionals[0] if positionals else opts.model
    opts.data_dir = positionals[1] if len(positionals) > 1 else opts.data_dir
    return opts, rest[len(positionals):]


def read_timm_flags(args: Sequence[str]) -> argparse.Namespace:
    """The values of the timm flags this layer reads, over the ``--config`` file's as timm reads them (the command
    line wins); ``--model-kwargs`` as a dict."""
    parser = _Parser()
    for names, default in _READ_FLAGS.items():
        parser.add_argument(*names.split(','), default=default)
    parser.add_argument('--num-classes', type=int)
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    config = parser.parse_known_args(args)[0].config
    parser.set_defaults(**(read_config(config) if config else {}))
    return parser.parse_known_args(args)[0]


def _device_args(args: List[str], device: Optional[str]) -> List[str]:
    """timm's scripts default to --device cuda; add --device cpu on a machine without a GPU."""
    import torch
    if device is not None or torch.cuda.is_available():
        return args
    log('no CUDA device: adding --device cpu')
    return args + ['--device', 'cpu']


def _required(opts: argparse.Namespace, usage: str) -> None:
    if not opts.model or not opts.data_dir:
        raise CliError(f'MODEL and DATA_DIR are required.\n{usage}')


def train_command(argv: Sequence[str]) -> int:
    """``train.sh MODEL DATA_DIR [flags...]``: check the data, run the trainer; its exit status."""
    opts, args = parse_command_line(argv)
    _required(opts, TRAIN_USAGE)
    recipe = ['--config', str(recipe_path(opts.recipe))] if opts.recipe else []
    args = ['--data-dir', opts.data_dir, '--model', opts.model, *recipe, *args]
    flags = read_timm_flags(args)
    names = check_data_dir(opts.data_dir, [(flags.train_split, '--train-split'), (flags.val_split, '--val-split')],
                           flags.dataset)
    found = folder_num_classes(flags.num_classes, names, f'{opts.data_dir} (split {flags.train_split!r})')
    if flags.num_classes is None and found:
        log(f'--num-classes {found} (from the class folders)')
        args += ['--num-classes', str(found)]
    args = _device_args(args, flags.device)
    runner, script = resolve_runner('train', opts.runner)
    return run_command(build_command('train', runner, script, args, opts.nproc, int(opts.nnodes)), opts.dry_run)[0]


def _check_validate_options(opts: argparse.Namespace, args: List[str]) -> None:
    _required(opts, VALIDATE_USAGE)
    if opts.recipe:
        raise CliError('--recipe is for training; validate.sh takes --img-size / --crop-pct etc. directly.')
    if opts.results_format:
        raise CliError('--results-format is not taken: validate.sh writes both PREFIX.json and PREFIX.csv '
                       '(--results-file PREFIX); drop the flag.')
    if opts.checkpoint is None and '--pretrained' not in args:
        raise CliError(f'Pass --checkpoint FILE (timm training checkpoint, .safetensors, reference checkpoint or '
                       f'Hub-format folder) or --pretrained.\n{VALIDATE_USAGE}')


def validate_command(argv: Sequence[str]) -> Tuple[int, Optional[Dict[str, Any]]]:
    """``validate.sh MODEL DATA_DIR [--checkpoint F | --pretrained] [flags...]``: exit status and result dict.

    The result (with the checkpoint, its kind, the data folder and the runner) is written to ``PREFIX.json`` and
    ``PREFIX.csv`` (``--results-file PREFIX``, default ``output/validate/<model>-<checkpoint name>``).
    """
    opts, args = parse_command_line(argv, validate=True)
    _check_validate_options(opts, args)
    flags = read_timm_flags(args)
    found = len(check_data_dir(opts.data_dir, [(flags.split, '--split')], flags.dataset))
    prefix = Path(re.sub(r'\.(json|csv)$', '', opts.results_file)) if opts.results_file else \
        Path('output') / 'validate' / f'{opts.model.replace("/", "_")}-{Path(opts.checkpoint or "pretrained").stem}'
    with tempfile.TemporaryDirectory(prefix='timm_mrap_validate_') as work_dir:
        model_arg, extra, kind = opts.model, [], 'pretrained'
        if opts.checkpoint is not None:
            model_arg, extra, kind = checkpoint_args(opts.model, opts.checkpoint, work_dir, flags.num_classes,
                                                     flags.model_kwargs)
        args = ['--data-dir', opts.data_dir, '--model', model_arg, *args, *extra]
        given = read_timm_flags(args)
        classes = given.num_classes
        if classes is None and found and opts.checkpoint is not None:
            args += ['--num-classes', str(found)]
        elif found and classes is not None and classes < found and given.class_map is None:
            raise CliError(f'{opts.data_dir} has {found} class folders but the model classifies {classes} classes; '
                           f'validate on the data set the checkpoint was trained for.')
        runner, script = resolve_runner('validate', opts.runner)
        cmd = build_command('validate', runner, script, _device_args(args, flags.device))
        rc, stdout = run_command(cmd, opts.dry_run, capture=True)
    if opts.dry_run or rc != 0:
        return rc, None
    result = parse_result(stdout)
    if result is None:
        raise CliError('The validator exited without printing a "--result" JSON block; see its output above.')
    result = {**result, 'checkpoint': opts.checkpoint or 'pretrained', 'checkpoint_kind': kind,
              'data_dir': opts.data_dir, 'runner': runner}
    paths = [write_result_file(f'{prefix}.{fmt}', result, fmt) for fmt in ('json', 'csv')]
    log(f'results: {paths[0]} and {paths[1]}')
    return 0, result
