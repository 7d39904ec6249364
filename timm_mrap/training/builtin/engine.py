""" Train and evaluation loops of the built-in trainer, with progress and ETA

Written against timm's utilities (``AverageMeter``, ``accuracy``, ``reduce_tensor``, ``dispatch_clip_grad``) the way
timm's ``train.py`` uses them, so the metrics in ``summary.csv`` mean the same thing.
"""
import logging
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from datetime import timedelta
from functools import partial
from typing import Callable, ContextManager, Iterable, Optional

import torch
import torch.nn as nn

from timm import utils
from timm.models import model_parameters

from ...errors import InputError

__all__ = ['Progress', 'amp_autocast_of', 'train_one_epoch', 'evaluate']

_logger = logging.getLogger('train')


def amp_autocast_of(args, device: torch.device) -> Callable[[], ContextManager]:
    """The autocast context factory of ``--amp`` / ``--amp-dtype``, as timm's scripts set it up (a no-op without)."""
    if not args.amp:
        return nullcontext
    if args.amp_dtype not in ('float16', 'bfloat16'):
        raise InputError(f'--amp-dtype {args.amp_dtype} is not supported: use float16 or bfloat16.')
    return partial(torch.autocast, device_type=device.type, dtype=getattr(torch, args.amp_dtype))


class Progress:
    """Progress of one loop: a tqdm bar, or log lines every ``log_interval`` steps with the loop's and the run's ETA.

    ``mode`` is ``bar``, ``log`` or ``auto`` (a bar when stderr is a terminal); ``enabled`` is
    False on non-primary ranks; ``steps_after`` counts the run's steps after this loop (for the run's ETA).
    """

    def __init__(self, loader: Iterable, desc: str, total: int, mode: str = 'auto', enabled: bool = True,
                 log_interval: int = 50, steps_after: int = 0):
        self.loader, self.desc, self.total, self.enabled = loader, desc, total, enabled
        self.log_interval = max(1, log_interval)
        self.steps_after = steps_after
        self.bar = None
        if enabled and (mode == 'bar' or mode == 'auto' and sys.stderr.isatty()):
            from tqdm.auto import tqdm  # a dependency of huggingface_hub, so of timm
            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        self.start = time.time()

    def __iter__(self):
        return iter(self.loader)

    def eta(self, step: int) -> str:
        """ETA of this loop and of the run, from the mean step time so far (``step`` is 0-based)."""
        per_step = (time.time() - self.start) / (step + 1)
        left = self.total - step - 1
        times = [timedelta(seconds=int(per_step * steps)) for steps in (left, left + self.steps_after)]
        return f'ETA {times[0]} (run {times[1]})'

    def update(self, step: int, message: Callable[[], str], postfix: Optional[dict] = None) -> None:
        """Advance to ``step`` (0-based); ``message`` builds the log line only when one is written."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
        elif step % self.log_interval == 0 or step == self.total - 1:
            _logger.info(f'{self.desc} [{step:>4d}/{self.total}]  {message()}  {self.eta(step)}')

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _train_step(model: nn.Module, input: torch.Tensor, target: torch.Tensor, optimizer: torch.optim.Optimizer,
                loss_fn: nn.Module, args, amp_autocast: Callable[[], ContextManager], loss_scaler, accum_steps: int,
                need_update: bool) -> torch.Tensor:
    """Forward and backward of one batch (without DDP gradient sync between updates); the optimizer steps when
    ``need_update``. Returns the loss, divided by ``accum_steps``."""
    second_order = getattr(optimizer, 'is_second_order', False)
    clip_params = lambda: model_parameters(model, exclude_head='agc' in args.clip_mode)  # noqa: E731
    with model.no_sync() if hasattr(model, 'no_sync') and not need_update else nullcontext():
        with amp_autocast():
            loss = loss_fn(model(input), target)
        loss = loss / accum_steps if accum_steps > 1 else loss
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                        parameters=clip_params(), create_graph=second_order, need_update=need_update)
        else:
            loss.backward(create_graph=second_order)
            if need_update:
                if args.clip_grad is not None:
                    utils.dispatch_clip_grad(clip_params(), value=args.clip_grad, mode=args.clip_mode)
                optimizer.step()
    return loss


def train_one_epoch(
        epoch: int, model: nn.Module, loader, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, args,
        device: torch.device, lr_scheduler=None, amp_autocast: Callable[[], ContextManager] = nullcontext,
        loss_scaler=None, model_ema=None, mixup_fn=None, num_updates_total: int = 0,
) -> 'OrderedDict[str, float]':
    """Train ``model`` for one epoch; returns ``{'loss': mean train loss}`` (reduced over ranks when distributed)."""
    if args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
        if args.prefetcher and getattr(loader, 'mixup_enabled', False):
            loader.mixup_enabled = False
        elif mixup_fn is not None:
            mixup_fn.mixup_enabled = False
    losses_m = utils.AverageMeter()
    model.train()
    accum_steps = args.grad_accum_steps
    last_accum_steps = len(loader) % accum_steps
    updates_per_epoch = (len(loader) + accum_steps - 1) // accum_steps
    num_updates = epoch * updates_per_epoch
    last_batch_idx_to_accum = len(loader) - last_accum_steps
    progress = Progress(
        loader, f'Train: {epoch}', len(loader), mode=args.progress, enabled=utils.is_primary(args),
        log_interval=args.log_interval * accum_steps,
        steps_after=max(0, num_updates_total - (epoch + 1) * updates_per_epoch) * accum_steps)
    optimizer.zero_grad()
    try:
        for batch_idx, (input, target) in enumerate(progress):
            need_update = batch_idx == len(loader) - 1 or (batch_idx + 1) % accum_steps == 0
            if batch_idx >= last_batch_idx_to_accum:
                accum_steps = last_accum_steps
            if not args.prefetcher:
                input, target = input.to(device), target.to(device)
                if mixup_fn is not None:
                    input, target = mixup_fn(input, target)
            if args.channels_last:
                input = input.contiguous(memory_format=torch.channels_last)
            loss = _train_step(model, input, target, optimizer, loss_fn, args, amp_autocast, loss_scaler, accum_steps,
                               need_update)
            if args.distributed:
                loss = utils.reduce_tensor(loss.detach(), args.world_size)
            losses_m.update(loss.item() * accum_steps, input.size(0))
            if need_update:
                num_updates += 1
                optimizer.zero_grad()
                if model_ema is not None:
                    model_ema.update(model, step=num_updates)
                if lr_scheduler is not None:
                    lr_scheduler.step_update(num_updates=num_updates, metric=losses_m.avg)
            lr = optimizer.param_groups[0]['lr']
            progress.update(batch_idx, lambda: f'Loss: {losses_m.val:#.3g} ({losses_m.avg:#.3g})  LR: {lr:.3e}',
                            postfix={'loss': f'{losses_m.avg:.3f}', 'lr': f'{lr:.2e}'})
    finally:
        progress.close()
    if hasattr(optimizer, 'sync_lookahead'):
        optimizer.sync_lookahead()
    return OrderedDict([('loss', losses_m.avg)])


def evaluate(
        model: nn.Module, loader, loss_fn: nn.Module, args, device: torch.device,
        amp_autocast: Callable[[], ContextManager] = nullcontext, log_suffix: str = '',
) -> 'OrderedDict[str, float]':
    """Loss, top-1 and top-5 accuracy (percent) of ``model`` on ``loader`` (averaged over ranks when distributed)."""
    losses_m, top1_m, top5_m = utils.AverageMeter(), utils.AverageMeter(), utils.AverageMeter()
    model.eval()
    progress = Progress(loader, 'Test' + log_suffix, len(loader), mode=args.progress,
                        enabled=utils.is_primary(args), log_interval=args.log_interval)
    try:
        with torch.no_grad():
            for batch_idx, (input, target) in enumerate(progress):
                if not args.prefetcher:
                    input, target = input.to(device), target.to(device)
                if args.channels_last:
                    input = input.contiguous(memory_format=torch.channels_last)
                with amp_autocast():
                    output = model(input)
                    if isinstance(output, (tuple, list)):
                        output = output[0]
                    loss = loss_fn(output, target)
                acc1, acc5 = utils.accuracy(output, target, topk=(1, 5))
                if args.distributed:
                    loss, acc1, acc5 = (utils.reduce_tensor(t.detach(), args.world_size) for t in (loss, acc1, acc5))
                losses_m.update(loss.item(), input.size(0))
                top1_m.update(acc1.item(), output.size(0))
                top5_m.update(acc5.item(), output.size(0))
                progress.update(batch_idx, lambda: f'Loss: {losses_m.avg:>6.3f}  Acc@1: {top1_m.avg:>7.3f}  '
                                                   f'Acc@5: {top5_m.avg:>7.3f}', postfix={'top1': f'{top1_m.avg:.2f}'})
    finally:
        progress.close()
    return OrderedDict([('loss', losses_m.avg), ('top1', top1_m.avg), ('top5', top5_m.avg)])
