""" Command-line arguments of the built-in trainer and validator

Flag names, defaults and ``--config`` handling are timm ``train.py`` / ``validate.py``'s (their help explains each
flag), so one command line or recipe runs with either runner. A timm flag the fallback does not implement is refused
with a message. Deviations (docs/training.md): ``--device`` defaults to CUDA when available, ``--overwrite`` guards an
existing experiment folder and ``--progress`` picks bar or log lines.
"""
import argparse
import ast
import logging
import sys
from typing import Any, List, Optional, Tuple

import yaml

from timm.utils import ParseKwargs

from ...errors import InputError
from ..recipes import read_config

__all__ = ['build_script_parser', 'parse_script_args']

_logger = logging.getLogger(__name__)

_TIMM_ONLY_HINT = (
    'timm\'s own train.py / validate.py support it: point TIMM_SCRIPTS_DIR at a timm checkout and use train.sh / '
    'validate.sh, or drop the flag')

# KIND then flags, each NAMES[=DEFAULT] (see _add_flags); names and defaults are timm's
_COMMON_FLAGS = """
str     --data-dir --dataset='' --class-map='' --interpolation='' --gp --device --amp-dtype=float16
int     --img-size --in-chans --num-classes -j,--workers=4 --seed=42
float   --crop-pct
float+  --mean --std
flag    --channels-last --amp --pin-mem --no-prefetcher
kwargs  --model-kwargs
"""
_TRAIN_FLAGS = """
str     --train-split=train --val-split=validation --model=resnet50 --initial-checkpoint='' --resume='' --opt=sgd
str     --clip-mode=norm --sched=cosine --lr-base-scale='' --aa --remode=pixel --mixup-mode=batch
str     --train-interpolation=random --dist-bn=reduce --worker-seeding=all --output='' --experiment=''
str     --eval-metric=top1 --dist-backend --dist-url
int     -b,--batch-size=128 -vb,--validation-batch-size --grad-accum-steps=1 --lr-base-size=256 --lr-cycle-limit=1
int     --epochs=300 --start-epoch --warmup-epochs=5 --cooldown-epochs=0 --patience-epochs=10 --recount=1
int     --mixup-off-epoch=0 --log-interval=50 --checkpoint-hist=10 --local_rank,--local-rank=0
int+    --decay-milestones=[90,180,270]
float   --opt-eps --momentum=0.9 --weight-decay=2e-5 --clip-grad --layer-decay --lr --lr-base=0.1
float   --lr-noise-pct=0.67 --lr-noise-std=1.0 --lr-cycle-mul=1.0 --lr-cycle-decay=0.5 --lr-k-decay=1.0
float   --warmup-lr=1e-5 --min-lr=0 --decay-epochs=90 --decay-rate,--dr=0.1 --hflip=0.5 --vflip=0.
float   --color-jitter=0.4 --reprob=0. --mixup=0. --cutmix=0. --mixup-prob=1.0 --mixup-switch-prob=0.5
float   --smoothing=0.1 --drop=0. --drop-path --model-ema-decay=0.9998
float+  --opt-betas --lr-noise --scale=[0.08,1.0] --ratio=[0.75,1.3333333333333333] --cutmix-minmax
flag    --pretrained --no-resume-opt --sched-on-updates --warmup-prefix --no-aug --sync-bn --model-ema
flag    --model-ema-force-cpu --model-ema-warmup --overwrite
kwargs  --opt-kwargs
auto|bar|log  --progress=auto
"""
_VALIDATE_FLAGS = """
str     --split=validation --model,-m=dpn92 --crop-mode --checkpoint='' --results-file=''
int     -b,--batch-size=256 --log-freq=10
flag    --pretrained --use-train-size --use-ema
csv|json  --results-format=csv
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


def _kind_options(kind: str) -> dict:
    """argparse options of a KIND: ``str`` / ``int`` / ``float``, with ``+`` for one or more values; ``flag``;
    ``kwargs`` (timm's ``k=v`` list); or ``a|b`` (a choice)."""
    if kind == 'flag':
        return dict(action='store_true', default=False)
    if kind == 'kwargs':
        return dict(nargs='*', default={}, action=ParseKwargs)
    if '|' in kind:
        return dict(choices=kind.split('|'))
    return dict(type={'str': str, 'int': int, 'float': float}[kind.rstrip('+')], nargs='+' if '+' in kind else None)


def _add_flags(parser: argparse.ArgumentParser, table: str) -> None:
    """Add the flags of ``table``: per line a KIND, then flags ``NAMES[=DEFAULT]`` (NAMES comma-separated aliases,
    DEFAULT a Python literal or a bare word)."""
    for line in filter(str.strip, table.splitlines()):
        kind, *flags = line.split()
        for flag in flags:
            names, has_default, default = flag.partition('=')
            names = names.split(',')
            opts = dict(default=_literal(default) if has_default else None, help=_HELP.get(names[-1], ' '))
            parser.add_argument(*names, **{**opts, **_kind_options(kind)})


def build_script_parser(kind: str) -> argparse.ArgumentParser:
    """timm ``<kind>.py``'s parser (``train`` / ``validate``), limited to what the built-in twin implements (same
    names and defaults)."""
    parser = argparse.ArgumentParser(
        prog=f'python -m timm_mrap.training.builtin.{kind}', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=f'timm-mrap built-in {kind}: the flags of timm {kind}.py (see its help for their meaning)')
    parser.add_argument('data', nargs='?', metavar='DIR', help='path to dataset (deprecated in timm: --data-dir)')
    parser.add_argument('-c', '--config', default='', metavar='FILE', help='timm YAML config of default arguments')
    parser.add_argument('--input-size', type=int, nargs=3, help=' ')
    parser.add_argument('--torchcompile', nargs='?', const='inductor', help=' ')
    _add_flags(parser, _COMMON_FLAGS + {'train': _TRAIN_FLAGS, 'validate': _VALIDATE_FLAGS}[kind])
    return parser


def parse_script_args(kind: str, argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, str]:
    """Parse timm ``<kind>.py`` flags as timm does (``--config`` YAML values become the defaults, the command line
    wins); the args and their YAML text."""
    parser = build_script_parser(kind)
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
                            f'({_TIMM_ONLY_HINT}).')
        parser.set_defaults(**cfg)
    args, unknown = parser.parse_known_args(remaining)
    if any(u.startswith('-') for u in unknown):
        parser.error(f'unsupported argument(s) {" ".join(u for u in unknown if u.startswith("-"))}: the built-in '
                     f'fallback does not implement them; {_TIMM_ONLY_HINT}.')
    if unknown:
        parser.error(f'unrecognized arguments: {" ".join(unknown)}')
    args.config = args_config.config
    args.data_dir = args.data_dir or args.data
    return args, yaml.safe_dump(args.__dict__, default_flow_style=False)

