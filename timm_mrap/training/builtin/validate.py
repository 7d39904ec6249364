""" Built-in validator: timm's ``validate.py`` command line, assembled from timm's library

The offline fallback of ``validate.sh``. It also takes Hub folders and the authors' reference checkpoints (converted
on the fly), and prints the result as timm does (a ``--result`` line, then JSON), optionally to ``--results-file``.
"""
import argparse
import json
import logging
import sys
from collections import OrderedDict
from typing import Any, List, Optional

import torch
import torch.nn as nn

import timm_mrap  # noqa: F401  (registers the models)
from timm import utils
from timm.data import create_loader, resolve_data_config

from ..input_checks import (
    InputError, class_names, create_checked_dataset, create_checked_model, model_from_checkpoint, split_where,
)
from ..results import write_result_file
from .args import parse_script_args
from .engine import amp_autocast_of, evaluate

__all__ = ['main', 'validate']

_logger = logging.getLogger('validate')


def _create_model(args) -> nn.Module:
    """The model with the weights of ``--checkpoint`` (timm, safetensors, Hub folder, reference) or ``--pretrained``."""
    model_kwargs = dict(in_chans=args.in_chans or (args.input_size[0] if args.input_size else 3),
                        global_pool=args.gp, **args.model_kwargs)
    if not args.checkpoint:
        return create_checked_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes,
                                    **model_kwargs)
    model, _ = model_from_checkpoint(args.model, args.checkpoint, args.num_classes, use_ema=args.use_ema,
                                     **model_kwargs)
    _logger.info(f'Loaded {"EMA " if args.use_ema else ""}weights from {args.checkpoint}')
    return model


def validate(args) -> 'OrderedDict[str, Any]':
    """Evaluate as timm's ``validate.py`` does; returns timm's result dict (top1, top1_err, top5, ...)."""
    args.pretrained = args.pretrained or not args.checkpoint
    args.prefetcher = not args.no_prefetcher
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    amp_autocast = amp_autocast_of(args, device)
    utils.random_seed(args.seed)

    dataset = create_checked_dataset(args.dataset, args.data_dir, args.split, '--split', class_map=args.class_map)
    model = _create_model(args)
    names = class_names(dataset)
    where = split_where(args.data_dir, args.split)
    if names is not None and len(names) > model.num_classes:
        raise InputError(f'{where} has {len(names)} class folders but model {args.model} predicts {model.num_classes} '
                         f'classes: pass the --num-classes and --checkpoint the model was trained with.')
    if args.num_classes is None:
        args.num_classes = model.num_classes
    param_count = sum(p.numel() for p in model.parameters())
    _logger.info(f'Model {args.model} created, param count: {param_count}')

    data_config = resolve_data_config(vars(args), model=model, use_test_size=not args.use_train_size, verbose=True)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)
    criterion = nn.CrossEntropyLoss().to(device)
    loader = create_loader(
        dataset, input_size=data_config['input_size'], batch_size=args.batch_size, use_prefetcher=args.prefetcher,
        interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
        num_workers=args.workers, crop_pct=data_config['crop_pct'], crop_mode=data_config['crop_mode'],
        pin_memory=args.pin_mem, device=device)

    # the trainer's own eval loop, so validate and the trainer's eval give the same numbers
    eval_args = argparse.Namespace(
        progress='log', log_interval=args.log_freq, prefetcher=args.prefetcher, channels_last=args.channels_last,
        distributed=False, rank=0, world_size=1)
    metrics = evaluate(model, loader, criterion, eval_args, device, amp_autocast)

    results = OrderedDict(
        model=args.model, top1=round(metrics['top1'], 4), top1_err=round(100 - metrics['top1'], 4),
        top5=round(metrics['top5'], 4), top5_err=round(100 - metrics['top5'], 4),
        param_count=round(param_count / 1e6, 2), img_size=data_config['input_size'][-1],
        crop_pct=data_config['crop_pct'], interpolation=data_config['interpolation'])
    _logger.info(' * Acc@1 {:.3f} ({:.3f}) Acc@5 {:.3f} ({:.3f})'.format(
        results['top1'], results['top1_err'], results['top5'], results['top5_err']))
    return results


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point: ``python -m timm_mrap.training.builtin.validate [timm validate.py flags]``."""
    if not logging.root.handlers:
        utils.setup_default_logging()
    args = parse_script_args('validate', argv)[0]
    try:
        results = validate(args)
    except InputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.results_file:
        write_result_file(args.results_file, results, args.results_format)
    # results as JSON on stdout after a delimiter line, for runner scripts (as timm's validate.py prints them)
    print(f'--result\n{json.dumps(results, indent=4)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
