""" Command-line arguments of the built-in trainer and validator

The flag names, defaults and ``--config`` handling follow timm's ``train.py`` / ``validate.py`` so the same command
line (or recipe YAML) runs with either timm's scripts or the built-in fallback. A flag of timm's scripts that the
fallback does not implement is rejected with a message that names it and points at timm's real scripts, instead of
being silently ignored. Deviations, all documented in docs/training.md: ``--device`` defaults to CUDA when
available (timm: always ``cuda``), ``--overwrite`` guards an existing experiment folder, and ``--progress`` picks
bar or log lines.
"""
import argparse
import logging
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from timm.utils import ParseKwargs

__all__ = ['build_train_parser', 'build_validate_parser', 'parse_train_args', 'parse_validate_args', 'TIMM_ONLY_HINT']

_logger = logging.getLogger(__name__)

TIMM_ONLY_HINT = (
    'timm\'s own train.py / validate.py support it: point TIMM_SCRIPTS_DIR at a timm checkout and use train.sh / '
    'validate.sh, or drop the flag')


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('data', nargs='?', metavar='DIR', const=None,
                        help='path to dataset (positional is deprecated in timm, use --data-dir)')
    parser.add_argument('--data-dir', metavar='DIR', help='path to dataset (root dir with split sub-folders)')
    parser.add_argument('--dataset', metavar='NAME', default='',
                        help='dataset type + name ("<type>/<name>") (default: ImageFolder or ImageTar if empty)')
    parser.add_argument('--class-map', default='', type=str, metavar='FILENAME',
                        help='path to class to idx mapping file (default: "")')


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--img-size', type=int, default=None, metavar='N',
                        help='Image size (default: None => model default)')
    parser.add_argument('--in-chans', type=int, default=None, metavar='N',
                        help='Image input channels (default: None => 3)')
    parser.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N N N',
                        help='Input all image dimensions (d h w, e.g. --input-size 3 224 224), model default if empty')
    parser.add_argument('--crop-pct', default=None, type=float, metavar='N', help='Input image center crop percent')
    parser.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN',
                        help='Override mean pixel value of dataset')
    parser.add_argument('--std', type=float, nargs='+', default=None, metavar='STD',
                        help='Override std deviation of dataset')
    parser.add_argument('--interpolation', default='', type=str, metavar='NAME',
                        help='Image resize interpolation type (overrides model)')


def _add_runtime_args(parser: argparse.ArgumentParser, workers: int) -> None:
    parser.add_argument('-j', '--workers', type=int, default=workers, metavar='N',
                        help=f'how many data loading processes to use (default: {workers})')
    parser.add_argument('--device', default=None, type=str,
                        help='Device (accelerator) to use (default: cuda when available, else cpu)')
    parser.add_argument('--channels-last', action='store_true', default=False, help='Use channels_last memory layout')
    parser.add_argument('--amp', action='store_true', default=False, help='use native AMP (torch.autocast)')
    parser.add_argument('--amp-dtype', default='float16', type=str,
                        help='lower precision AMP dtype, float16 or bfloat16 (default: float16)')
    parser.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor',
                        help='Enable compilation w/ specified backend (default: inductor).')
    parser.add_argument('--pin-mem', action='store_true', default=False,
                        help='Pin CPU memory in DataLoader for more efficient (sometimes) transfer to GPU.')
    parser.add_argument('--no-prefetcher', action='store_true', default=False, help='disable fast prefetcher')
    parser.add_argument('--seed', type=int, default=42, metavar='S', help='random seed (default: 42)')
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                        help='extra model arguments as key=value (e.g. attn=cbam)')


def build_train_parser() -> argparse.ArgumentParser:
    """timm ``train.py``'s parser, limited to what the built-in trainer implements (same names and defaults)."""
    parser = argparse.ArgumentParser(
        description='timm-mrap built-in trainer (timm train.py flags)',
        prog='python -m timm_mrap.training.builtin.train')
    _add_data_args(parser)
    group = parser.add_argument_group('Dataset parameters')
    group.add_argument('--train-split', metavar='NAME', default='train', help='dataset train split (default: train)')
    group.add_argument('--val-split', metavar='NAME', default='validation',
                       help='dataset validation split (default: validation)')

    group = parser.add_argument_group('Model parameters')
    group.add_argument('--model', default='resnet50', type=str, metavar='MODEL',
                       help='Name of model to train (default: "resnet50")')
    group.add_argument('--pretrained', action='store_true', default=False,
                       help='Start with pretrained version of specified network (if avail)')
    group.add_argument('--initial-checkpoint', default='', type=str, metavar='PATH',
                       help='Initialize model from this checkpoint (default: none)')
    group.add_argument('--resume', default='', type=str, metavar='PATH',
                       help='Resume full model and optimizer state from checkpoint (default: none)')
    group.add_argument('--no-resume-opt', action='store_true', default=False,
                       help='prevent resume of optimizer state when resuming model')
    group.add_argument('--num-classes', type=int, default=None, metavar='N',
                       help='number of label classes (default: the number of class folders of the train split)')
    group.add_argument('--gp', default=None, type=str, metavar='POOL',
                       help='Global pool type, one of (fast, avg, max, avgmax, avgmaxc). Model default if None.')
    _add_input_args(group)
    group.add_argument('-b', '--batch-size', type=int, default=128, metavar='N',
                       help='Input batch size for training (default: 128)')
    group.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N',
                       help='Validation batch size override (default: None)')
    group.add_argument('--grad-accum-steps', type=int, default=1, metavar='N',
                       help='The number of steps to accumulate gradients (default: 1)')

    group = parser.add_argument_group('Optimizer parameters')
    group.add_argument('--opt', default='sgd', type=str, metavar='OPTIMIZER', help='Optimizer (default: "sgd")')
    group.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON',
                       help='Optimizer Epsilon (default: None, use opt default)')
    group.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA',
                       help='Optimizer Betas (default: None, use opt default)')
    group.add_argument('--momentum', type=float, default=0.9, metavar='M', help='Optimizer momentum (default: 0.9)')
    group.add_argument('--weight-decay', type=float, default=2e-5, help='weight decay (default: 2e-5)')
    group.add_argument('--clip-grad', type=float, default=None, metavar='NORM',
                       help='Clip gradient norm (default: None, no clipping)')
    group.add_argument('--clip-mode', type=str, default='norm',
                       help='Gradient clipping mode. One of ("norm", "value", "agc")')
    group.add_argument('--layer-decay', type=float, default=None, help='layer-wise learning rate decay (default: None)')
    group.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs)

    group = parser.add_argument_group('Learning rate schedule parameters')
    group.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER',
                       help='LR scheduler (default: "cosine")')
    group.add_argument('--sched-on-updates', action='store_true', default=False,
                       help='Apply LR scheduler step on update instead of epoch end.')
    group.add_argument('--lr', type=float, default=None, metavar='LR',
                       help='learning rate, overrides lr-base if set (default: None)')
    group.add_argument('--lr-base', type=float, default=0.1, metavar='LR',
                       help='base learning rate: lr = lr_base * global_batch_size / base_size')
    group.add_argument('--lr-base-size', type=int, default=256, metavar='DIV',
                       help='base learning rate batch size (divisor, default: 256).')
    group.add_argument('--lr-base-scale', type=str, default='', metavar='SCALE',
                       help='base learning rate vs batch_size scaling ("linear", "sqrt", based on opt if empty)')
    group.add_argument('--lr-noise', type=float, nargs='+', default=None, metavar='pct, pct',
                       help='learning rate noise on/off epoch percentages')
    group.add_argument('--lr-noise-pct', type=float, default=0.67, metavar='PERCENT',
                       help='learning rate noise limit percent (default: 0.67)')
    group.add_argument('--lr-noise-std', type=float, default=1.0, metavar='STDDEV',
                       help='learning rate noise std-dev (default: 1.0)')
    group.add_argument('--lr-cycle-mul', type=float, default=1.0, metavar='MULT',
                       help='learning rate cycle len multiplier (default: 1.0)')
    group.add_argument('--lr-cycle-decay', type=float, default=0.5, metavar='MULT',
                       help='amount to decay each learning rate cycle (default: 0.5)')
    group.add_argument('--lr-cycle-limit', type=int, default=1, metavar='N',
                       help='learning rate cycle limit, cycles enabled if > 1')
    group.add_argument('--lr-k-decay', type=float, default=1.0, help='learning rate k-decay for cosine/poly')
    group.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='warmup learning rate')
    group.add_argument('--min-lr', type=float, default=0, metavar='LR',
                       help='lower lr bound for cyclic schedulers that hit 0 (default: 0)')
    group.add_argument('--epochs', type=int, default=300, metavar='N', help='number of epochs to train (default: 300)')
    group.add_argument('--start-epoch', default=None, type=int, metavar='N',
                       help='manual epoch number (useful on restarts)')
    group.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                       help='list of decay epoch indices for multistep lr. must be increasing')
    group.add_argument('--decay-epochs', type=float, default=90, metavar='N', help='epoch interval to decay LR')
    group.add_argument('--warmup-epochs', type=int, default=5, metavar='N',
                       help='epochs to warmup LR, if scheduler supports')
    group.add_argument('--warmup-prefix', action='store_true', default=False,
                       help='Exclude warmup period from decay schedule.')
    group.add_argument('--cooldown-epochs', type=int, default=0, metavar='N',
                       help='epochs to cooldown LR at min_lr, after cyclic schedule ends')
    group.add_argument('--patience-epochs', type=int, default=10, metavar='N',
                       help='patience epochs for Plateau LR scheduler (default: 10)')
    group.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='LR decay rate')

    group = parser.add_argument_group('Augmentation and regularization parameters')
    group.add_argument('--no-aug', action='store_true', default=False,
                       help='Disable all training augmentation, override other train aug args')
    group.add_argument('--scale', type=float, nargs='+', default=[0.08, 1.0], metavar='PCT',
                       help='Random resize scale (default: 0.08 1.0)')
    group.add_argument('--ratio', type=float, nargs='+', default=[3. / 4., 4. / 3.], metavar='RATIO',
                       help='Random resize aspect ratio (default: 0.75 1.33)')
    group.add_argument('--hflip', type=float, default=0.5, help='Horizontal flip training aug probability')
    group.add_argument('--vflip', type=float, default=0., help='Vertical flip training aug probability')
    group.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT', help='Color jitter factor')
    group.add_argument('--aa', type=str, default=None, metavar='NAME',
                       help='AutoAugment / RandAugment policy, e.g. "rand-m9-mstd0.5-inc1" (default: None)')
    group.add_argument('--reprob', type=float, default=0., metavar='PCT', help='Random erase prob (default: 0.)')
    group.add_argument('--remode', type=str, default='pixel', help='Random erase mode (default: "pixel")')
    group.add_argument('--recount', type=int, default=1, help='Random erase count (default: 1)')
    group.add_argument('--mixup', type=float, default=0.0, help='mixup alpha, mixup enabled if > 0. (default: 0.)')
    group.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha, cutmix enabled if > 0. (default: 0.)')
    group.add_argument('--cutmix-minmax', type=float, nargs='+', default=None,
                       help='cutmix min/max ratio, overrides alpha and enables cutmix if set (default: None)')
    group.add_argument('--mixup-prob', type=float, default=1.0,
                       help='Probability of performing mixup or cutmix when either/both is enabled')
    group.add_argument('--mixup-switch-prob', type=float, default=0.5,
                       help='Probability of switching to cutmix when both mixup and cutmix enabled')
    group.add_argument('--mixup-mode', type=str, default='batch',
                       help='How to apply mixup/cutmix params. Per "batch", "pair", or "elem"')
    group.add_argument('--mixup-off-epoch', default=0, type=int, metavar='N',
                       help='Turn off mixup after this epoch, disabled if 0 (default: 0)')
    group.add_argument('--smoothing', type=float, default=0.1, help='Label smoothing (default: 0.1)')
    group.add_argument('--train-interpolation', type=str, default='random',
                       help='Training interpolation (random, bilinear, bicubic default: "random")')
    group.add_argument('--drop', type=float, default=0.0, metavar='PCT', help='Dropout rate (default: 0.)')
    group.add_argument('--drop-path', type=float, default=None, metavar='PCT', help='Drop path rate (default: None)')

    group = parser.add_argument_group('Batch norm parameters')
    group.add_argument('--sync-bn', action='store_true', help='Enable Torch synchronized BatchNorm.')
    group.add_argument('--dist-bn', type=str, default='reduce',
                       help='Distribute BatchNorm stats between nodes after each epoch ("broadcast", "reduce", or "")')

    group = parser.add_argument_group('Model exponential moving average parameters')
    group.add_argument('--model-ema', action='store_true', default=False,
                       help='Enable tracking moving average of model weights')
    group.add_argument('--model-ema-force-cpu', action='store_true', default=False,
                       help='Force ema to be tracked on CPU, rank=0 node only. Disables EMA validation.')
    group.add_argument('--model-ema-decay', type=float, default=0.9998,
                       help='decay factor for model weights moving average (default: 0.9998)')
    group.add_argument('--model-ema-warmup', action='store_true', help='Enable warmup for model EMA decay.')

    group = parser.add_argument_group('Miscellaneous parameters')
    _add_runtime_args(group, workers=4)
    group.add_argument('--worker-seeding', type=str, default='all', help='worker seed mode (default: all)')
    group.add_argument('--log-interval', type=int, default=50, metavar='N',
                       help='how many batches to wait before logging training status')
    group.add_argument('--checkpoint-hist', type=int, default=10, metavar='N',
                       help='number of checkpoints to keep (default: 10)')
    group.add_argument('--output', default='', type=str, metavar='PATH',
                       help='path to output folder (default: none, current dir)')
    group.add_argument('--experiment', default='', type=str, metavar='NAME',
                       help='name of train experiment, name of sub-folder for output')
    group.add_argument('--eval-metric', default='top1', type=str, metavar='EVAL_METRIC',
                       help='Best metric (default: "top1")')
    group.add_argument('--dist-backend', default=None, type=str, help='torch.distributed backend (default: auto)')
    group.add_argument('--dist-url', default=None, type=str, help='torch.distributed init url (default: env://)')
    group.add_argument('--local_rank', '--local-rank', default=0, type=int)
    group.add_argument('--overwrite', action='store_true', default=False,
                       help='(built-in only) replace checkpoints of an earlier run in OUTPUT/EXPERIMENT')
    group.add_argument('--progress', default='auto', choices=('auto', 'bar', 'log'),
                       help='(built-in only) progress as a tqdm bar or as log lines with ETA (default: auto, a bar '
                            'on a terminal)')
    return parser


def build_validate_parser() -> argparse.ArgumentParser:
    """timm ``validate.py``'s parser, limited to what the built-in validator implements (same names and defaults)."""
    parser = argparse.ArgumentParser(
        description='timm-mrap built-in validator (timm validate.py flags)',
        prog='python -m timm_mrap.training.builtin.validate')
    _add_data_args(parser)
    parser.add_argument('--split', metavar='NAME', default='validation', help='dataset split (default: validation)')
    parser.add_argument('--model', '-m', metavar='NAME', default='dpn92', help='model architecture (default: dpn92)')
    parser.add_argument('--pretrained', dest='pretrained', action='store_true', help='use pre-trained model')
    parser.add_argument('-b', '--batch-size', default=256, type=int, metavar='N', help='mini-batch size (default: 256)')
    _add_input_args(parser)
    parser.add_argument('--use-train-size', action='store_true', default=False,
                        help='force use of train input size, even when test size is specified in pretrained cfg')
    parser.add_argument('--crop-mode', default=None, type=str, metavar='N',
                        help='Input image crop mode (squash, border, center). Model default if None.')
    parser.add_argument('--num-classes', type=int, default=None,
                        help='Number classes in dataset (default: the checkpoint\'s classifier, else the model\'s)')
    parser.add_argument('--gp', default=None, type=str, metavar='POOL',
                        help='Global pool type, one of (fast, avg, max, avgmax, avgmaxc). Model default if None.')
    parser.add_argument('--log-freq', default=10, type=int, metavar='N', help='batch logging frequency (default: 10)')
    parser.add_argument('--checkpoint', default='', type=str, metavar='PATH',
                        help='timm training checkpoint (.pth.tar), .safetensors, or reference MRAP/MAF checkpoint')
    parser.add_argument('--use-ema', dest='use_ema', action='store_true', help='use ema version of weights if present')
    _add_runtime_args(parser, workers=4)
    parser.add_argument('--results-file', default='', type=str, metavar='FILENAME',
                        help='Output file for validation results (summary)')
    parser.add_argument('--results-format', default='csv', type=str, choices=('csv', 'json'),
                        help='Format for results file one of (csv, json) (default: csv).')
    return parser


def _known_dests(parser: argparse.ArgumentParser) -> set:
    return {a.dest for a in parser._actions}


def _reject_unsupported(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> None:
    flags = [u for u in unknown if u.startswith('-')]
    if flags:
        parser.error(f'unsupported argument(s) {" ".join(flags)}: the built-in fallback does not implement them; '
                     f'{TIMM_ONLY_HINT}.')
    if unknown:
        parser.error(f'unrecognized arguments: {" ".join(unknown)}')


def _load_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read a timm YAML config (``key: value`` with timm's argument names) and warn about keys the fallback lacks."""
    try:
        with open(path, 'r') as f:
            cfg = yaml.safe_load(f) or {}
    except FileNotFoundError:
        parser.error(f'--config {path} does not exist; pass the path of a timm YAML config file.')
    except yaml.YAMLError as e:
        parser.error(f'--config {path} is not valid YAML ({e}).')
    if not isinstance(cfg, dict):
        parser.error(f'--config {path} must hold a mapping of timm argument names to values, not {type(cfg).__name__}.')
    cfg = {k.replace('-', '_'): v for k, v in cfg.items()}
    ignored = sorted(set(cfg) - _known_dests(parser))
    if ignored:
        _logger.warning(f'--config {path}: the built-in fallback ignores {", ".join(ignored)} ({TIMM_ONLY_HINT}).')
    return cfg


def _parse(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> Tuple[argparse.Namespace, str]:
    # the first parser reads only --config; its values become defaults of the main parser, the command line wins
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='', type=str, metavar='FILE',
                               help='YAML config file specifying default arguments')
    parser.add_argument('-c', '--config', default='', type=str, metavar='FILE',
                        help='YAML config file specifying default arguments (timm format: argument names as keys)')
    args_config, remaining = config_parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args_config.config:
        parser.set_defaults(**_load_config(args_config.config, parser))
    args, unknown = parser.parse_known_args(remaining)
    _reject_unsupported(parser, unknown)
    args.config = args_config.config
    if args.data and not args.data_dir:
        args.data_dir = args.data
    args_text = yaml.safe_dump(args.__dict__, default_flow_style=False)
    return args, args_text


def parse_train_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, str]:
    """Parse timm ``train.py`` flags (``--config`` YAML values become defaults). Returns args and their YAML text."""
    return _parse(build_train_parser(), argv)


def parse_validate_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse timm ``validate.py`` flags (``--config`` YAML values become defaults)."""
    return _parse(build_validate_parser(), argv)[0]
