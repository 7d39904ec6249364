""" Built-in trainer: timm's ``train.py`` command line and output layout, assembled from timm's library

The offline fallback of ``train.sh``: ``[torchrun ...] python -m timm_mrap.training.builtin.train [timm train.py
flags]``. The timm functions it is built from are listed in docs/training.md.
"""
import logging
import os
import sys
from datetime import datetime
from typing import List, Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import timm_mrap  # noqa: F401  (registers the models on every rank)
from timm import utils
from timm.data import FastCollateMixup, Mixup, create_loader, resolve_data_config
from timm.layers import convert_sync_batchnorm
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import resume_checkpoint, safe_model_name
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils.summary import trim_summary

from ..input_checks import (
    InputError, check_class_folders, class_names, create_checked_dataset, create_checked_model, folder_num_classes,
    read_checked_checkpoint, split_where,
)
from .args import parse_script_args
from .engine import amp_autocast_of, evaluate, train_one_epoch

__all__ = ['main', 'train']

_logger = logging.getLogger('train')


def _resolve_lr(args) -> None:
    """timm's rule: without ``--lr``, scale ``--lr-base`` by the global batch size (linear, sqrt for adaptive opts)."""
    if args.lr:
        return
    global_batch_size = args.batch_size * args.world_size * args.grad_accum_steps
    if not args.lr_base_scale:
        args.lr_base_scale = 'sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear'
    args.lr = args.lr_base * (global_batch_size / args.lr_base_size) ** (0.5 if args.lr_base_scale == 'sqrt' else 1)
    if utils.is_primary(args):
        _logger.info(f'Learning rate ({args.lr}) calculated from base learning rate ({args.lr_base}) and effective '
                     f'global batch size ({global_batch_size}) with {args.lr_base_scale} scaling.')


def _amp_setup(args, device: torch.device):
    """(autocast context factory, loss scaler or None) as timm sets them up for native AMP."""
    amp_autocast = amp_autocast_of(args, device)
    if args.amp and utils.is_primary(args):
        _logger.info(f'Using native Torch AMP ({args.amp_dtype}). Training in mixed precision.')
    scaled = args.amp and device.type == 'cuda' and args.amp_dtype == 'float16'
    return amp_autocast, utils.NativeScaler(device=device.type) if scaled else None


def _resumes_into(args, output_dir: str) -> bool:
    """True when ``--resume`` names a checkpoint inside ``output_dir`` (the run continues its own history)."""
    if not args.resume or not os.path.isdir(output_dir):
        return False
    return os.path.samefile(os.path.dirname(os.path.abspath(args.resume)), output_dir)


def _output_dir(args, data_config) -> str:
    """``OUTPUT/EXPERIMENT`` as timm names it; resuming without ``--experiment`` continues in the checkpoint's folder.
    A folder with checkpoints is only reused when resuming from it or with ``--overwrite`` (checked on every rank)."""
    if args.resume and not args.experiment:
        output_dir = os.path.dirname(os.path.abspath(args.resume))
    else:
        exp_name = args.experiment or '-'.join([
            datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model), str(data_config['input_size'][-1])])
        output_dir = os.path.join(args.output or './output/train', exp_name)
    if os.path.isfile(os.path.join(output_dir, 'last.pth.tar')) and not _resumes_into(args, output_dir) \
            and not args.overwrite:
        raise InputError(
            f'{output_dir} already holds checkpoints of an earlier run: continue it with --resume '
            f'{os.path.join(output_dir, "last.pth.tar")}, choose another --experiment, or pass --overwrite to replace '
            f'them.')
    return output_dir


def _datasets(args):
    """Train and eval datasets; the class folders decide ``--num-classes`` when it is not given."""
    common = dict(class_map=args.class_map, batch_size=args.batch_size)
    dataset_train = create_checked_dataset(args.dataset, args.data_dir, args.train_split, '--train-split',
                                           is_training=True, seed=args.seed, **common)
    dataset_eval = create_checked_dataset(args.dataset, args.data_dir, args.val_split, '--val-split', **common)
    train_where = split_where(args.data_dir, args.train_split)
    check_class_folders(dataset_train, dataset_eval, train_where, split_where(args.data_dir, args.val_split))
    given_classes = args.num_classes
    args.num_classes = folder_num_classes(args.num_classes, class_names(dataset_train), train_where)
    if given_classes is None and args.num_classes is not None and utils.is_primary(args):
        _logger.info(f'--num-classes not given: using the {args.num_classes} class folders of {train_where}.')
    return dataset_train, dataset_eval


def _model(args) -> nn.Module:
    """The model of ``--model``, with the weights of ``--initial-checkpoint`` (EMA when it has them)."""
    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    model = create_checked_model(
        args.model, pretrained=args.pretrained, in_chans=in_chans, num_classes=args.num_classes, drop_rate=args.drop,
        drop_path_rate=args.drop_path, global_pool=args.gp, **args.model_kwargs)
    if args.num_classes is None:
        args.num_classes = model.num_classes
    if args.initial_checkpoint:
        checkpoint = read_checked_checkpoint(args.initial_checkpoint, '--initial-checkpoint', prefer_ema=True,
                                             model=model, model_name=args.model)
        model.load_state_dict(checkpoint.state_dict)
    if utils.is_primary(args):
        _logger.info(f'Model {safe_model_name(args.model)} created, param count: '
                     f'{sum(p.numel() for p in model.parameters())}')
    return model


def _loaders(args, dataset_train, dataset_eval, data_config, device: torch.device, mixup: bool):
    """timm's train and eval loaders (augmentation, mixup collate with the prefetcher); the mixup of batches without."""
    collate_fn = mixup_fn = None
    if mixup:
        mixup_args = dict(
            mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax, prob=args.mixup_prob,
            switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing,
            num_classes=args.num_classes)
        if args.prefetcher:
            collate_fn = FastCollateMixup(**mixup_args)
        else:
            mixup_fn = Mixup(**mixup_args)
    train_interpolation = args.train_interpolation
    if args.no_aug or not train_interpolation:
        train_interpolation = data_config['interpolation']
    common = dict(input_size=data_config['input_size'], use_prefetcher=args.prefetcher, mean=data_config['mean'],
                  std=data_config['std'], num_workers=args.workers, distributed=args.distributed,
                  pin_memory=args.pin_mem, device=device)
    loader_train = create_loader(
        dataset_train, batch_size=args.batch_size, is_training=True, no_aug=args.no_aug, re_prob=args.reprob,
        re_mode=args.remode, re_count=args.recount, scale=args.scale, ratio=args.ratio, hflip=args.hflip,
        vflip=args.vflip, color_jitter=args.color_jitter, auto_augment=args.aa, interpolation=train_interpolation,
        collate_fn=collate_fn, worker_seeding=args.worker_seeding, **common)
    loader_eval = create_loader(
        dataset_eval, batch_size=args.validation_batch_size or args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], crop_pct=data_config['crop_pct'], **common)
    if len(loader_train) == 0:
        raise InputError(f'{split_where(args.data_dir, args.train_split)} has {len(dataset_train)} images, fewer '
                         f'than one batch: lower -b/--batch-size.')
    return loader_train, loader_eval, mixup_fn


def _train_loss(args, mixup: bool) -> nn.Module:
    if mixup:
        return SoftTargetCrossEntropy()  # smoothing is folded into the mixup targets
    return LabelSmoothingCrossEntropy(smoothing=args.smoothing) if args.smoothing else nn.CrossEntropyLoss()


def _saver(args, output_dir: str, model, optimizer, model_ema, loss_scaler, start_epoch: int):
    """timm's ``CheckpointSaver`` on the primary rank (None elsewhere), continuing the history of a resumed run."""
    if not utils.is_primary(args):
        return None
    utils.get_outdir(output_dir)
    saver = utils.CheckpointSaver(
        model=model, optimizer=optimizer, args=args, model_ema=model_ema, amp_scaler=loss_scaler,
        checkpoint_dir=output_dir, recovery_dir=output_dir, decreasing=args.eval_metric == 'loss',
        max_history=args.checkpoint_hist)
    if _resumes_into(args, output_dir):
        saver.load_state_dict_from_checkpoint(args.resume)  # the ranked history and best metric of the run
    trim_summary(os.path.join(output_dir, 'summary.csv'), start_epoch)
    return saver


def _setup(args) -> torch.device:
    """Device, distributed mode and seed, as timm's ``train.py`` sets them up."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    args.prefetcher = not args.no_prefetcher
    args.grad_accum_steps = max(1, args.grad_accum_steps)
    args.device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    device = utils.init_distributed_device(args)
    if args.distributed:
        _logger.info(f'Training in distributed mode with multiple processes, 1 device per process. '
                     f'Process {args.rank}, total {args.world_size}, device {args.device}.')
    else:
        _logger.info(f'Training with a single process on 1 device ({args.device}).')
    utils.random_seed(args.seed, args.rank)
    return device


def train(args, args_text: str) -> Optional[float]:
    """Train as timm's ``train.py`` does with the parsed ``args``; returns the best eval metric (primary rank)."""
    device = _setup(args)
    amp_autocast, loss_scaler = _amp_setup(args, device)
    dataset_train, dataset_eval = _datasets(args)
    model = _model(args)
    data_config = resolve_data_config(vars(args), model=model, verbose=utils.is_primary(args))
    output_dir = _output_dir(args, data_config)
    model.to(device=device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.distributed and args.sync_bn:
        args.dist_bn = ''  # disable dist_bn when sync BN active
        model = convert_sync_batchnorm(model)
    _resolve_lr(args)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    resume_epoch = None
    if args.resume:
        read_checked_checkpoint(args.resume, '--resume', model=model, model_name=args.model)
        resume_epoch = resume_checkpoint(
            model, args.resume, optimizer=None if args.no_resume_opt else optimizer,
            loss_scaler=None if args.no_resume_opt else loss_scaler, log_info=utils.is_primary(args))
    model_ema = None
    if args.model_ema:  # after device placement and AMP, before the DDP wrapper (as timm does)
        model_ema = utils.ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                                     device='cpu' if args.model_ema_force_cpu else None)
        if args.resume:
            ema_checkpoint = read_checked_checkpoint(args.resume, '--resume', prefer_ema=True)
            model_ema.module.load_state_dict(ema_checkpoint.state_dict)
    if args.distributed:
        model = DistributedDataParallel(model, device_ids=[device] if device.type == 'cuda' else None)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)  # after DDP, as timm does
    mixup = args.mixup > 0 or args.cutmix > 0. or args.cutmix_minmax is not None
    loader_train, loader_eval, mixup_fn = _loaders(args, dataset_train, dataset_eval, data_config, device, mixup)
    train_loss_fn = _train_loss(args, mixup).to(device=device)
    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args),
                                                   updates_per_epoch=updates_per_epoch)
    start_epoch = args.start_epoch if args.start_epoch is not None else (resume_epoch or 0)
    if lr_scheduler is not None and start_epoch > 0:
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)
    saver = _saver(args, output_dir, model, optimizer, model_ema, loss_scaler, start_epoch)
    if saver is not None:
        with open(os.path.join(output_dir, 'args.yaml'), 'w') as f:
            f.write(args_text)
        _logger.info(f'Scheduled epochs: {num_epochs} (starting at {start_epoch}). Output: {output_dir}')
    loss_fns = train_loss_fn, nn.CrossEntropyLoss().to(device)
    best = (saver.best_metric, saver.best_epoch) if saver is not None else (None, None)
    try:
        for epoch in range(start_epoch, num_epochs):
            best = _epoch(epoch, args, model, model_ema, (loader_train, loader_eval), optimizer, loss_fns, device,
                          lr_scheduler, (amp_autocast, loss_scaler), mixup_fn, saver,
                          num_updates_total=num_epochs * updates_per_epoch) or best
    except KeyboardInterrupt:
        _logger.warning('Interrupted: resume with --resume ' + os.path.join(output_dir, 'last.pth.tar'))
    if best[0] is not None:
        _logger.info(f'*** Best metric: {best[0]} (epoch {best[1]})')
    return best[0]


def _epoch(epoch: int, args, model, model_ema, loaders, optimizer, loss_fns, device, lr_scheduler, amp, mixup_fn,
           saver, num_updates_total: int):
    """Train and evaluate one epoch, append to ``summary.csv``, save checkpoints; the (best metric, epoch) or None."""
    (loader_train, loader_eval), (train_loss_fn, validate_loss_fn), (amp_autocast, loss_scaler) = loaders, loss_fns, amp
    if hasattr(loader_train.dataset, 'set_epoch'):
        loader_train.dataset.set_epoch(epoch)
    elif args.distributed and hasattr(loader_train.sampler, 'set_epoch'):
        loader_train.sampler.set_epoch(epoch)
    train_metrics = train_one_epoch(
        epoch, model, loader_train, optimizer, train_loss_fn, args, device, lr_scheduler=lr_scheduler,
        amp_autocast=amp_autocast, loss_scaler=loss_scaler, model_ema=model_ema, mixup_fn=mixup_fn,
        num_updates_total=num_updates_total)
    distribute_bn = args.distributed and args.dist_bn in ('broadcast', 'reduce')
    if distribute_bn:
        utils.distribute_bn(model, args.world_size, args.dist_bn == 'reduce')
    eval_metrics = evaluate(model, loader_eval, validate_loss_fn, args, device, amp_autocast=amp_autocast)
    if model_ema is not None and not args.model_ema_force_cpu:
        if distribute_bn:
            utils.distribute_bn(model_ema, args.world_size, args.dist_bn == 'reduce')
        eval_metrics = evaluate(model_ema, loader_eval, validate_loss_fn, args, device, amp_autocast=amp_autocast,
                                log_suffix=' (EMA)')
    if utils.is_primary(args):
        _logger.info(f'Epoch {epoch}: train loss {train_metrics["loss"]:.4f}, eval loss {eval_metrics["loss"]:.4f}, '
                     f'top1 {eval_metrics["top1"]:.2f}, top5 {eval_metrics["top5"]:.2f}')
    if saver is not None:
        lrs = [param_group['lr'] for param_group in optimizer.param_groups]
        utils.update_summary(epoch, train_metrics, eval_metrics, lr=sum(lrs) / len(lrs),
                             filename=os.path.join(saver.checkpoint_dir, 'summary.csv'))
    best = saver.save_checkpoint(epoch, metric=eval_metrics[args.eval_metric]) if saver is not None else None
    if lr_scheduler is not None:
        lr_scheduler.step(epoch + 1, eval_metrics[args.eval_metric])
    return best


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point: ``python -m timm_mrap.training.builtin.train [timm train.py flags]``."""
    if not logging.root.handlers:
        utils.setup_default_logging()
    args, args_text = parse_script_args('train', argv)
    try:
        train(args, args_text)
    except InputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
