""" Command-line arguments of the built-in trainer and validator

The flag names, defaults and ``--config`` handling follow timm's ``train.py`` / ``validate.py`` (whose help explains
each flag), so the same command line (or recipe YAML) runs with either timm's scripts or the built-in fallback. A flag
of timm's scripts that the fallback does not implement is rejected with a message that names it and points at timm's
scripts, instead of being silently ignored. Deviations, all documented in docs/training.md: ``--device`` defaults to
CUDA when available (timm: always ``cuda``), ``--overwrite`` guards an existing experiment folder, and
``--progress`` picks bar or log lines.
"""
import argparse
import ast
import logging
import re
import sys
from typing import Any, List, Optional, Tuple

import yaml

from timm.utils import ParseKwargs

from ...errors import InputError
from ..recipes import read_config

__all__ = ['build_train_parser', 'build_validate_parser', 'parse_train_args', 'parse_validate_args', 'TIMM_ONLY_HINT']

_logger = logging.getLogger(__name__)

TIMM_ONLY_HINT = (
    'timm\'s own train.py / validate.py support it: point TIMM_SCRIPTS_DIR at a timm checkout and use train.sh / '
    'validate.sh, or drop the flag')

# one flag per line: NAMES KIND [DEFAULT] (see _add_flags); names and defaults are timm's
_COMMON_FLAGS = """
--data-dir                  str
--dataset                   str      ''
--class-map                 str      ''
--img-size                  int
--in-chans                  int
--input-size                int*3
--crop-pct                  float
--mean                      float+
--std                       float+
--interpolation             str      ''
--num-classes               int
--gp                        str
-j,--workers                int      4
--device                    str
--channels-last             flag
--amp                       flag
--amp-dtype                 str      float16
--torchcompile              str?inductor
--pin-mem                   flag
--no-prefetcher             flag
--seed                      int      42
--model-kwargs              kwargs
"""
_TRAIN_FLAGS = """
--train-split               str      train
--val-split                 str      validation
--model                     str      resnet50
--pretrained                flag
--initial-checkpoint        str      ''
--resume                    str      ''
--no-resume-opt             flag
-b,--batch-size             int      128
-vb,--validation-batch-size int
--grad-accum-steps          int      1
--opt                       str      sgd
--opt-eps                   float
--opt-betas                 float+
--momentum                  float    0.9
--weight-decay              float    2e-5
--clip-grad                 float
--clip-mode                 str      norm
--layer-decay               float
--opt-kwargs                kwargs
--sched                     str      cosine
--sched-on-updates          flag
--lr                        float
--lr-base                   float    0.1
--lr-base-size              int      256
--lr-base-scale             str      ''
--lr-noise                  float+
--lr-noise-pct              float    0.67
--lr-noise-std              float    1.0
--lr-cycle-mul              float    1.0
--lr-cycle-decay            float    0.5
--lr-cycle-limit            int      1
--lr-k-decay                float    1.0
--warmup-lr                 float    1e-5
--min-lr                    float    0
--epochs                    int      300
--start-epoch               int
--decay-milestones          int+     [90, 180, 270]
--decay-epochs              float    90
--warmup-epochs             int      5
--warmup-prefix             flag
--cooldown-epochs           int      0
--patience-epochs           int      10
--decay-rate,--dr           float    0.1
--no-aug                    flag
--scale                     float+   [0.08, 1.0]
--ratio                     float+   [0.75, 1.3333333333333333]
--hflip                     float    0.5
--vflip                     float    0.
--color-jitter              float    0.4
--aa                        str
--reprob                    float    0.
--remode                    str      pixel
--recount                   int      1
--mixup                     float    0.
--cutmix                    float    0.
--cutmix-minmax             float+
--mixup-prob                float    1.0
--mixup-switch-prob         float    0.5
--mixup-mode                str      batch
--mixup-off-epoch           int      0
--smoothing                 float    0.1
--train-interpolation       str      random
--drop                      float    0.
--drop-path                 float
--sync-bn                   flag
--dist-bn                   str      reduce
--model-ema                 flag
--model-ema-force-cpu       flag
--model-ema-decay           float    0.9998
--model-ema-warmup          flag
--worker-seeding            str      all
--log-interval              int      50
--checkpoint-hist           int      10
--output                    str      ''
--experiment                str      ''
--eval-metric               str      top1
--dist-backend              str
--dist-url                  str
--local_rank,--local-rank   int      0
--overwrite                 flag
--progress                  auto|bar|log  auto
"""
_VALIDATE_FLAGS = """
--split                     str      validation
--model,-m                  str      dpn92
--pretrained                flag
-b,--batch-size             int      256
--use-train-size            flag
--crop-mode                 str
--log-freq                  int      10
--checkpoint                str      ''
--use-ema                   flag
--results-file              str      ''
--results-format            csv|json  csv
"""
_HELP = {
    '--device': 'device (default: cuda when available, else cpu)',
    '--overwrite': '(built-in only) replace checkpoints of an earlier run in OUTPUT/EXPERIMENT',
    '--progress': '(built-in only) a tqdm bar or log lines with ETA (default: auto, a bar on a terminal)',
    '--checkpoint': 'timm training checkpoint (.pth.tar), .safetensors, Hub folder or reference MRAP/MAF checkpoint',
    '--num-classes': 'number of classes (default: the train split\'s class folders; validate: the checkpoint\'s)',
}


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string default


def _add_flags(parser: argparse.ArgumentParser, table: str) -> None:
    """Add one flag per line of ``table``: ``NAMES KIND [DEFAULT]``.

    NAMES are comma-separated aliases. KIND is ``str`` / ``int`` / ``float``, followed by ``+`` (one or more values),
    ``*N`` (N values) or ``?CONST`` (an optional value, CONST when the flag has none); ``flag`` (store_true);
    ``kwargs`` (timm's ``k=v`` list); or ``a|b`` (a choice). DEFAULT is a Python literal (a bare word is a string).
    """
    types = {'str': str, 'int': int, 'float': float}
    for line in filter(str.strip, table.splitlines()):
        names, kind, *default = line.split(None, 2)
        names = names.split(',')
        opts = dict(default=_literal(default[0]) if default else None, help=_HELP.get(names[-1], ' '))
        if kind == 'flag':
            opts.update(action='store_true', default=False)
        elif kind == 'kwargs':
            opts.update(nargs='*', default={}, action=ParseKwargs)
        elif '|' in kind:
            opts.update(choices=kind.split('|'))
        else:
            base, sep, rest = re.fullmatch(r'(\w+)([+*?]?)(.*)', kind).groups()
            opts.update(type=types[base], nargs={'+': '+', '*': rest, '?': '?'}.get(sep))
            if sep == '*':
                opts['nargs'] = int(rest)
            elif sep == '?':
                opts['const'] = rest
        parser.add_argument(*names, **opts)


def _timm_script_parser(kind: str, table: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f'python -m timm_mrap.training.builtin.{kind}', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=f'timm-mrap built-in {kind}: the flags of timm {kind}.py (see its help for their meaning)')
    parser.add_argument('data', nargs='?', metavar='DIR', help='path to dataset (deprecated in timm: --data-dir)')
    parser.add_argument('-c', '--config', default='', metavar='FILE', help='timm YAML config of default arguments')
    _add_flags(parser, _COMMON_FLAGS + table)
    return parser


def build_train_parser() -> argparse.ArgumentParser:
    """timm ``train.py``'s parser, limited to what the built-in trainer implements (same names and defaults)."""
    return _timm_script_parser('train', _TRAIN_FLAGS)


def build_validate_parser() -> argparse.ArgumentParser:
    """timm ``validate.py``'s parser, limited to what the built-in validator implements (same names and defaults)."""
    return _timm_script_parser('validate', _VALIDATE_FLAGS)


def _parse(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> Tuple[argparse.Namespace, str]:
    """timm's two-step parse: ``--config`` values become the parser's defaults, the command line wins."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    args_config, remaining = config_parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args_config.config:
        try:
            cfg = read_config(args_config.config)
        except InputError as e:
            parser.error(str(e))
        ignored = sorted(set(cfg) - {a.dest for a in parser._actions})
        if ignored:
            _logger.warning(f'--config {args_config.config}: the built-in fallback ignores {", ".join(ignored)} '
                            f'({TIMM_ONLY_HINT}).')
        parser.set_defaults(**cfg)
    args, unknown = parser.parse_known_args(remaining)
    if any(u.startswith('-') for u in unknown):
        parser.error(f'unsupported argument(s) {" ".join(u for u in unknown if u.startswith("-"))}: the built-in '
                     f'fallback does not implement them; {TIMM_ONLY_HINT}.')
    if unknown:
        parser.error(f'unrecognized arguments: {" ".join(unknown)}')
    args.config = args_config.config
    args.data_dir = args.data_dir or args.data
    return args, yaml.safe_dump(args.__dict__, default_flow_style=False)


def parse_train_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, str]:
    """Parse timm ``train.py`` flags (``--config`` YAML values become defaults). Returns args and their YAML text."""
    return _parse(build_train_parser(), argv)


def parse_validate_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse timm ``validate.py`` flags (``--config`` YAML values become defaults)."""
    return _parse(build_validate_parser(), argv)[0]
