"""Interleaved benchmark of model / attention variants.

Every setting is measured for all variants in round-robin order (repeat ``r`` of variant ``A``, then of ``B``, ...),
so load from other processes hits every variant alike. Each repeat times ``iters`` steps after ``warmup`` untimed steps
(at least one, which also finds a variant that cannot run); the summary is the median over repeats with the quartiles
and extremes. ``onnxruntime`` and ``executorch`` run the programs of ``timm_mrap.deploy.export_model`` (int8 calibrated
on random inputs: that sets the scales, not the speed); MACs are ``timm_mrap.complexity.count_macs`` at batch 1.
"""
import contextlib
import copy
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..complexity import count_macs, count_params
from ..errors import TimmMrapError
from .config import BenchmarkConfig, Variant, parse_setting, parse_variants
from .plot import setting_name

__all__ = ['VariantError', 'run_benchmark', 'summarize_times']


class VariantError(TimmMrapError, RuntimeError):
    """A variant that could not run in a setting (``run_benchmark`` without ``keep_going``)."""


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    dtype = torch.float16 if precision == 'fp16' else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != 'fp32')


def _unsupported(device: torch.device, precision: str, runtime: str, mode: str) -> Optional[str]:
    """Why a setting cannot run here, or None."""
    if runtime == 'onnxruntime' and (device.type != 'cpu' or precision != 'fp32' or mode != 'infer'):
        return 'onnxruntime is measured for fp32 CPU inference'
    if runtime == 'executorch' and (device.type != 'cpu' or precision not in ('fp32', 'int8') or mode != 'infer'):
        return 'ExecuTorch is measured for fp32 and int8 CPU inference'
    if precision == 'int8' and runtime != 'executorch':
        return 'int8 is measured with ExecuTorch'
    if precision == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        return 'bf16 not supported on this GPU'
    if precision == 'fp16' and device.type != 'cuda':
        return 'fp16 autocast is measured on CUDA'
    return None


def _make_program_step(
        model: nn.Module, batch_size: int, cfg: BenchmarkConfig, precision: str, runtime: str, workdir: str,
) -> Callable[[], None]:
    """A closure running one inference of ``model``'s exported program: onnxruntime runs the default ONNX export
    (dynamic batch and size), ExecuTorch the XNNPACK program (int8: calibrated on random inputs)."""
    from ..deploy import SUFFIXES, export_model, load_onnx, runtime_predictor
    fmt = 'onnx' if runtime == 'onnxruntime' else 'executorch'
    x = torch.randn(batch_size, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(cfg.seed))
    options = dict(int8=True, calibration=[torch.randn_like(x) for _ in range(4)]) if precision == 'int8' else {}
    path = export_model(model, fmt, Path(workdir) / f'model_{id(model)}{SUFFIXES[fmt]}', tuple(x.shape[1:]),
                        batch_size, overwrite=True, **options)
    predict = load_onnx(str(path), cfg.threads) if fmt == 'onnx' else runtime_predictor(fmt, str(path))
    return lambda: predict(x)


def _make_step(
        model: nn.Module, mode: str, batch_size: int, cfg: BenchmarkConfig, device: torch.device, precision: str,
        runtime: str, workdir: str,
) -> Callable[[], None]:
    """A closure running one inference forward or one training step (forward, loss, backward, SGD update)."""
    if runtime in ('onnxruntime', 'executorch'):
        return _make_program_step(model, batch_size, cfg, precision, runtime, workdir)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = torch.randn(batch_size, 3, cfg.img_size, cfg.img_size, device=device).contiguous(memory_format=memory_format)
    fn = torch.compile(model) if runtime == 'compile' else model
    if mode == 'infer':
        model.eval()

        def step():
            with torch.inference_mode(), _autocast(device, precision):
                fn(x)
        return step

    model.train()
    target = torch.randint(0, cfg.num_classes, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with _autocast(device, precision):
            loss = loss_fn(fn(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def summarize_times(times_ms: Sequence[float]) -> Dict[str, float]:
    """Median, quartiles and extremes of per-step times in ms."""
    ts = sorted(times_ms)
    if len(ts) >= 2:
        q25, _, q75 = statistics.quantiles(ts, n=4, method='inclusive')
    else:
        q25 = q75 = ts[0]
    return dict(median_ms=statistics.median(ts), q25_ms=q25, q75_ms=q75, min_ms=ts[0], max_ms=ts[-1])


def _settings(cfg: BenchmarkConfig) -> List[Tuple[str, str, str, str, int]]:
    """(device, precision, runtime, mode, batch size) for every setting to measure."""
    if cfg.settings:
        return [(device,) + parse_setting(spec) for device in cfg.devices for spec in cfg.settings]
    combos = itertools.product(cfg.devices, cfg.precisions, cfg.runtimes, cfg.modes)
    return [(device, precision, runtime, mode, b) for device, precision, runtime, mode in combos
            for b in (cfg.infer_batch_sizes if mode == 'infer' else cfg.train_batch_sizes)]


def run_benchmark(
        cfg: BenchmarkConfig, log: Optional[Callable[[str], None]] = print, keep_going: bool = False,
) -> List[Dict[str, Any]]:
    """Measure every variant in every setting of ``cfg``, interleaved; one result dict per (variant, setting).

    Args:
        cfg: What to measure.
        log: Progress printer (None for silence).
        keep_going: Measure the other variants when one cannot run in a setting (its row holds the error) instead
            of raising ``VariantError``.

    Returns:
        Rows with the keys of ``CSV_COLUMNS``; ``relative`` is the median time over the baseline's in that setting,
        ``error`` holds the message where a variant could not run in a setting (with ``keep_going``).
    """
    cfg.validate()
    log = log or (lambda msg: None)
    variants = parse_variants(cfg.variants)
    labels = [v.label for v in variants]
    baseline = cfg.baseline or labels[0]
    if baseline not in labels:
        raise ValueError(f'Baseline {baseline!r} is not among the variants {labels}; pass one of them.')
    measures_executorch = any(runtime == 'executorch' for _, _, runtime, _, _ in _settings(cfg))
    with _thread_count(cfg.threads, executorch=measures_executorch):
        return _run(cfg, variants, baseline, log, keep_going)


@contextlib.contextmanager
def _thread_count(threads: Optional[int], executorch: bool) -> Iterator[None]:
    """torch's threads (and ExecuTorch's one thread pool, when measured) set to ``threads`` inside, restored after."""
    if not threads:
        yield
        return
    torch_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    if executorch:
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
        executorch_before = _threadpool_get_thread_count()
        _unsafe_reset_threadpool(threads)
    try:
        yield
    finally:
        torch.set_num_threads(torch_before)
        if executorch:
            _unsafe_reset_threadpool(executorch_before)


def _run(
        cfg: BenchmarkConfig, variants: List[Variant], baseline: str, log: Callable[[str], None], keep_going: bool,
) -> List[Dict[str, Any]]:
    models, info = {}, {}
    for v in variants:
        torch.manual_seed(cfg.seed)
        model = v.create(num_classes=cfg.num_classes)
        info[v.label] = dict(
            params_m=count_params(model) / 1e6, gmacs=count_macs(model, (3, cfg.img_size, cfg.img_size)) / 1e9)
        models[v.label] = model
        log(f'{v.label}: {info[v.label]["params_m"]:.3f} M params, {info[v.label]["gmacs"]:.3f} GMACs')

    rows = []
    with tempfile.TemporaryDirectory(prefix='timm_mrap_bench_') as workdir:
        for setting in _settings(cfg):
            rows += _measure_setting(cfg, variants, baseline, models, info, setting, workdir, log, keep_going)
    return rows


def _measure_setting(
        cfg: BenchmarkConfig, variants: List[Variant], baseline: str, models: Dict[str, nn.Module],
        info: Dict[str, Dict[str, float]], setting: Tuple[str, str, str, str, int], workdir: str,
        log: Callable[[str], None], keep_going: bool,
) -> List[Dict[str, Any]]:
    """Every variant in one setting, round-robin; one row per variant."""
    device_name, precision, runtime, mode, batch_size = setting
    device = torch.device(device_name)
    setting_row = dict(device=device_name, precision=precision, runtime=runtime, mode=mode, batch_size=batch_size,
                       img_size=cfg.img_size)
    tag = setting_name(setting_row)
    why = _unsupported(device, precision, runtime, mode)
    if why:
        log(f'skip {tag}: {why}')
        return []
    steps, errors = {}, {}
    for v in variants:
        try:
            # a fresh copy per setting: training updates weights and compile wraps the module
            model = v.set_impl(copy.deepcopy(models[v.label]).to(device))
            model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
            step = _make_step(model, mode, batch_size, cfg, device, precision, runtime, workdir)
            t0 = time.perf_counter()
            for _ in range(max(cfg.warmup, 1)):  # at least one: a variant that cannot run fails here
                step()
            _sync(device)
            steps[v.label] = step
            if runtime != 'eager':
                log(f'{tag}: {v.label} prepared ({runtime}) + warmed up in {time.perf_counter() - t0:.1f} s')
        except Exception as e:  # any failure of a variant: raised at once, or recorded in its row with keep_going
            errors[v.label] = f'{type(e).__name__}: {e}'.splitlines()[0][:300]
            log(f'{tag}: {v.label} failed: {errors[v.label]}')
            if not keep_going:
                raise VariantError(f'{v.label} failed in {tag}: {errors[v.label]} (--keep-going measures the other '
                                   f'variants)') from e
    times = _time_steps(cfg, steps, device)
    base = statistics.median(times[baseline]) if baseline in times else float('nan')
    rows = []
    for v in variants:
        row = dict(variant=v.label, model=v.model, attn=v.attn or '', mrap_impl=v.mrap_impl or '', **setting_row,
                   **info[v.label], baseline=baseline, error=errors.get(v.label, ''))
        if v.label in times:
            stats = summarize_times(times[v.label])
            row.update(stats, repeats=cfg.repeats, throughput=batch_size * 1e3 / stats['median_ms'],
                       relative=stats['median_ms'] / base)
        else:
            row.update(dict.fromkeys(('median_ms', 'q25_ms', 'q75_ms', 'min_ms', 'max_ms', 'throughput', 'relative'),
                                     float('nan')), repeats=0)
        rows.append(row)
    log(tag + ': ' + ', '.join(f'{r["variant"]} {r["median_ms"]:.1f} ms ({r["relative"]:.2f}x)' for r in rows))
    return rows


def _time_steps(cfg: BenchmarkConfig, steps: Dict[str, Callable[[], None]], device: torch.device):
    """Per-step times in ms of each prepared step, ``cfg.repeats`` repeats in round-robin order."""
    times = {label: [] for label in steps}
    for _ in range(cfg.repeats):
        for label, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(cfg.iters):
                step()
            _sync(device)
            times[label].append((time.perf_counter() - t0) * 1e3 / cfg.iters)
    return times
