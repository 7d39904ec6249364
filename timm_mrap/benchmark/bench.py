"""Interleaved benchmark of model / attention variants.

Every setting (device, precision, runtime, inference or training, batch size) is measured for all variants
in round-robin order: repeat ``r`` of variant ``A``, then of ``B``, ..., then repeat ``r + 1``; so load from other
processes hits every variant alike. Each repeat times ``iters`` steps after ``warmup`` untimed steps; the summary is
the median over repeats with the inter-quartile range and min / max.

Runtimes: ``eager`` PyTorch, ``compile`` (``torch.compile``), ``onnxruntime`` (the export users get by default,
``timm_mrap.deploy.export_onnx``: dynamo, dynamic batch and size, run by onnxruntime's CPU provider; fp32 inference
only) and ``executorch`` (the ``.pte`` program of ``timm_mrap.deploy.executorch.export_executorch``, XNNPACK delegate,
run by ExecuTorch's runtime; fp32 or ``int8`` inference, int8 calibrated on random inputs, which sets the scales but not
the speed). Precisions: ``fp32``, ``bf16`` / ``fp16`` autocast (the ``--amp`` paths of timm's scripts) and ``int8``
(ExecuTorch only).

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` at batch 1 (MACs = FLOPs / 2). That counter sees
convolutions, linear layers and matrix products only: pooling, reductions, normalisation and element-wise work (most of
what attention modules add) are not in it.
"""
import csv
import dataclasses
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import timm

from ..complexity import MAC_COUNTER, count_macs, count_params
from .plot import plot_relative_cost, setting_name

__all__ = [
    'BenchmarkConfig', 'Variant', 'check_output', 'parse_setting', 'parse_variants', 'run_benchmark', 'setting_name',
    'summarize', 'write_results', 'DEFAULT_VARIANTS', 'MAC_COUNTER', 'CSV_COLUMNS', 'STANDARD_SETTINGS',
]

DEFAULT_VARIANTS = (
    'mobilenetv2_mrap:none', 'mobilenetv2_mrap:se', 'mobilenetv2_mrap:eca', 'mobilenetv2_mrap:cbam',
    'mobilenetv2_mrap:mafc', 'mobilenetv2_mrap:mrap',
    'mobilenetv1_100', 'mobilenetv2_100', 'mobilenetv3_large_100',
)
CSV_COLUMNS = (
    'variant', 'model', 'attn', 'mrap_impl', 'device', 'precision', 'runtime', 'mode', 'batch_size', 'img_size',
    'params_m', 'gmacs', 'median_ms', 'q25_ms', 'q75_ms', 'min_ms', 'max_ms', 'repeats', 'throughput', 'relative',
    'baseline', 'error',
)
MODES = ('infer', 'train')
PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8')
RUNTIMES = ('eager', 'compile', 'onnxruntime', 'executorch')
# the rows of the cost table in the README (docs/performance.md): device-independent settings
STANDARD_SETTINGS = (
    'fp32:eager:infer:1', 'fp32:eager:infer:32', 'fp32:eager:train:32', 'bf16:eager:infer:32', 'bf16:eager:train:32',
    'fp32:compile:infer:32', 'fp32:onnxruntime:infer:1', 'fp32:onnxruntime:infer:32', 'fp32:executorch:infer:1',
    'int8:executorch:infer:1',
)


@dataclass(frozen=True)
class Variant:
    """One model to measure: a timm model name and, for our ``*_mrap`` / ``*_mafc`` models, an ``attn`` choice and
    MRAP's implementation (``'model:attn:impl'``, e.g. ``mobilenetv2_mrap:mrap:reference``; set as ``module.impl`` on
    every MRAP, over the ``TIMM_MRAP_IMPL`` switch the others take)."""
    model: str
    attn: Optional[str] = None
    mrap_impl: Optional[str] = None

    @property
    def label(self) -> str:
        return ':'.join(p for p in (self.model, self.attn, self.mrap_impl) if p)

    def create(self, **kwargs) -> nn.Module:
        if self.attn:
            kwargs['attn'] = self.attn
        model = timm.create_model(self.model, **kwargs)
        if self.mrap_impl:
            from timm_mrap.layers import MRAP
            for module in model.modules():
                if isinstance(module, MRAP):
                    module.impl = self.mrap_impl
        return model


def parse_variants(specs: Sequence[str]) -> List[Variant]:
    """``'model'``, ``'model:attn'`` or ``'model:attn:impl'`` strings to variants; unknown names are a clear error."""
    import timm_mrap  # noqa: F401  registers our models
    from timm_mrap.layers.config import MRAP_IMPLS
    from timm_mrap.layers import ATTN_CHOICES
    variants = []
    for spec in specs:
        model, _, rest = spec.partition(':')
        attn, _, impl = rest.partition(':')
        if not timm.is_model(model):
            raise ValueError(
                f'Unknown model {model!r} in variant {spec!r}; see timm.list_models() (e.g. mobilenetv2_100).')
        if attn and attn not in ATTN_CHOICES:
            raise ValueError(f'Unknown attn {attn!r} in variant {spec!r}; choose one of {ATTN_CHOICES}.')
        if impl and (impl not in MRAP_IMPLS or attn != 'mrap'):
            raise ValueError(f'Bad MRAP impl in variant {spec!r}: use model:mrap:IMPL with IMPL one of {MRAP_IMPLS}.')
        variants.append(Variant(model, attn or None, impl or None))
    if len(set(variants)) != len(variants):
        raise ValueError(f'Variants repeat: {list(specs)}; list each once.')
    return variants


@dataclass
class BenchmarkConfig:
    """What to measure. Lists multiply: every device x precision x runtime x mode x batch size is one setting, unless
    ``settings`` lists them explicitly."""
    variants: Sequence[str] = DEFAULT_VARIANTS
    baseline: Optional[str] = None  # variant label the ratios refer to; default: the first variant
    devices: Sequence[str] = ('cpu',)
    precisions: Sequence[str] = ('fp32',)
    runtimes: Sequence[str] = ('eager',)
    modes: Sequence[str] = MODES
    infer_batch_sizes: Sequence[int] = (1, 32)
    train_batch_sizes: Sequence[int] = (32,)
    img_size: int = 224
    num_classes: int = 1000
    warmup: int = 2
    repeats: int = 7
    iters: int = 1
    threads: Optional[int] = None
    channels_last: bool = False
    seed: int = 0
    # explicit 'precision:runtime:mode:batch' settings (e.g. STANDARD_SETTINGS) instead of the product of the lists
    settings: Optional[Sequence[str]] = None

    def validate(self) -> None:
        bad = [m for m in self.modes if m not in MODES] + [p for p in self.precisions if p not in PRECISIONS]
        bad += [r for r in self.runtimes if r not in RUNTIMES]
        if bad:
            raise ValueError(f'Unknown modes / precisions / runtimes {bad}; modes are {MODES}, precisions '
                             f'{PRECISIONS}, runtimes {RUNTIMES}.')
        for spec in self.settings or ():
            parse_setting(spec)
        for d in self.devices:
            if torch.device(d).type == 'cuda' and not torch.cuda.is_available():
                raise ValueError(f'Device {d!r} asked for but CUDA is not available; use --device cpu.')
        if min(self.repeats, self.iters) < 1 or self.warmup < 0 or self.img_size < 1:
            raise ValueError('repeats and iters must be >= 1, warmup >= 0 and img_size >= 1.')
        if any(b < 1 for b in list(self.infer_batch_sizes) + list(self.train_batch_sizes)):
            raise ValueError('Batch sizes must be >= 1.')


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def parse_setting(spec: str) -> Tuple[str, str, str, int]:
    """``'precision:runtime:mode:batch'`` to a tuple, with a clear error for anything else."""
    parts = spec.split(':')
    if len(parts) != 4 or parts[0] not in PRECISIONS or parts[1] not in RUNTIMES or parts[2] not in MODES \
            or not parts[3].isdigit() or int(parts[3]) < 1:
        raise ValueError(f'Bad setting {spec!r}; write precision:runtime:mode:batch with precision in {PRECISIONS}, '
                         f'runtime in {RUNTIMES}, mode in {MODES}, e.g. bf16:eager:train:32.')
    return parts[0], parts[1], parts[2], int(parts[3])


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


def _make_onnx_step(model: nn.Module, batch_size: int, cfg: BenchmarkConfig, workdir: str) -> Callable[[], None]:
    """A closure running one onnxruntime inference of ``model`` exported with a dynamic batch."""
    import numpy as np
    import onnxruntime
    from ..deploy import export_onnx
    path = Path(workdir) / f'model_{id(model)}.onnx'
    export_onnx(model.eval(), str(path), (3, cfg.img_size, cfg.img_size), batch_size=2, overwrite=True)
    options = onnxruntime.SessionOptions()
    if cfg.threads:
        options.intra_op_num_threads = cfg.threads
    session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: np.random.default_rng(cfg.seed).standard_normal(
        (batch_size, 3, cfg.img_size, cfg.img_size), dtype=np.float32)}

    def step():
        session.run(None, feed)
    return step


def _make_executorch_step(
        model: nn.Module, batch_size: int, cfg: BenchmarkConfig, precision: str) -> Callable[[], None]:
    """A closure running one inference of ``model``'s ExecuTorch program (XNNPACK; fp32 or int8)."""
    from executorch.runtime import Runtime
    from ..deploy.executorch import executorch_program
    x = torch.randn(batch_size, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(cfg.seed))
    calibration = [torch.randn_like(x) for _ in range(4)] if precision == 'int8' else None
    buffer = executorch_program(model.eval(), x, int8=precision == 'int8', calibration=calibration)
    method = Runtime.get().load_program(buffer).load_method('forward')

    def step(buffer=buffer):  # the loaded program reads the buffer's memory: the closure keeps it alive
        method.execute([x])
    return step


def _make_step(
        model: nn.Module, mode: str, batch_size: int, cfg: BenchmarkConfig, device: torch.device, precision: str,
        runtime: str, workdir: str,
) -> Callable[[], None]:
    """A closure running one inference forward or one training step (forward, loss, backward, SGD update)."""
    if runtime == 'onnxruntime':
        return _make_onnx_step(model, batch_size, cfg, workdir)
    if runtime == 'executorch':
        return _make_executorch_step(model, batch_size, cfg, precision)
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


def summarize(times_ms: Sequence[float]) -> Dict[str, float]:
    """Median, quartiles and extremes of per-step times in ms."""
    ts = sorted(times_ms)
    if len(ts) >= 2:
        q25, _, q75 = statistics.quantiles(ts, n=4, method='inclusive')
    else:
        q25 = q75 = ts[0]
    return dict(median_ms=statistics.median(ts), q25_ms=q25, q75_ms=q75, min_ms=ts[0], max_ms=ts[-1])


def _settings(cfg: BenchmarkConfig) -> List[Tuple[str, str, str, str, int]]:
    """(device, precision, runtime, mode, batch size) for every setting to measure."""
    out = []
    for device in cfg.devices:
        if cfg.settings:
            out += [(device,) + parse_setting(spec) for spec in cfg.settings]
            continue
        for precision in cfg.precisions:
            for runtime in cfg.runtimes:
                for mode in cfg.modes:
                    sizes = cfg.infer_batch_sizes if mode == 'infer' else cfg.train_batch_sizes
                    out += [(device, precision, runtime, mode, b) for b in sizes]
    return out


def run_benchmark(cfg: BenchmarkConfig, log: Optional[Callable[[str], None]] = print) -> List[Dict[str, Any]]:
    """Measure every variant in every setting of ``cfg``, interleaved; one result dict per (variant, setting).

    Args:
        cfg: What to measure.
        log: Progress printer (None for silence).

    Returns:
        Rows with the keys of ``CSV_COLUMNS``; ``relative`` is the median time over the baseline's in that setting,
        ``error`` holds the message where a variant could not run in a setting (e.g. a compile failure).
    """
    cfg.validate()
    log = log or (lambda msg: None)
    variants = parse_variants(cfg.variants)
    labels = [v.label for v in variants]
    baseline = cfg.baseline or labels[0]
    if baseline not in labels:
        raise ValueError(f'Baseline {baseline!r} is not among the variants {labels}; pass one of them.')
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, variants, labels, baseline, log)
    finally:
        torch.set_num_threads(threads_before)


def _run(
        cfg: BenchmarkConfig, variants: List[Variant], labels: List[str], baseline: str, log: Callable[[str], None],
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
    workdir = tempfile.TemporaryDirectory(prefix='timm_mrap_bench_')
    try:
        for setting in _settings(cfg):
            rows += _measure_setting(cfg, variants, labels, baseline, models, info, setting, workdir.name, log)
    finally:
        workdir.cleanup()
    return rows


def _measure_setting(
        cfg: BenchmarkConfig, variants: List[Variant], labels: List[str], baseline: str, models: Dict[str, nn.Module],
        info: Dict[str, Dict[str, float]], setting: Tuple[str, str, str, str, int], workdir: str,
        log: Callable[[str], None],
) -> List[Dict[str, Any]]:
    """Every variant in one setting, round-robin; one row per variant."""
    device_name, precision, runtime, mode, batch_size = setting
    device = torch.device(device_name)
    setting_row = dict(
        device=device_name, precision=precision, runtime=runtime, mode=mode, batch_size=batch_size,
        img_size=cfg.img_size)
    tag = setting_name(setting_row)
    why = _unsupported(device, precision, runtime, mode)
    if why:
        log(f'skip {tag}: {why}')
        return []
    rows = []
    steps, errors, times = {}, {}, {label: [] for label in labels}
    for v in variants:
        # a fresh copy per setting: training updates weights and compile wraps the module
        model = _fresh_copy(models[v.label], device, cfg.channels_last)
        try:
            step = _make_step(model, mode, batch_size, cfg, device, precision, runtime, workdir)
            t0 = time.perf_counter()
            for _ in range(max(cfg.warmup, 1 if runtime != 'eager' else 0)):
                step()
            _sync(device)
            steps[v.label] = step
            if runtime != 'eager':
                log(f'{tag}: {v.label} prepared ({runtime}) + warmed up in {time.perf_counter() - t0:.1f} s')
        except Exception as e:  # keep measuring the others; the row records why this one is missing
            errors[v.label] = f'{type(e).__name__}: {e}'.splitlines()[0][:300]
            log(f'{tag}: {v.label} failed: {errors[v.label]}')
    for _ in range(cfg.repeats):
        for label, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(cfg.iters):
                step()
            _sync(device)
            times[label].append((time.perf_counter() - t0) * 1e3 / cfg.iters)
    base = statistics.median(times[baseline]) if times[baseline] else float('nan')
    for label, v in zip(labels, variants):
        row = dict(variant=label, model=v.model, attn=v.attn or '', mrap_impl=v.mrap_impl or '', **setting_row,
                   **info[label])
        if label in steps:
            stats = summarize(times[label])
            row.update(stats, repeats=cfg.repeats, throughput=batch_size * 1e3 / stats['median_ms'],
                       relative=stats['median_ms'] / base, baseline=baseline, error='')
        else:
            row.update({k: float('nan') for k in ('median_ms', 'q25_ms', 'q75_ms', 'min_ms', 'max_ms',
                                                  'throughput', 'relative')},
                       repeats=0, baseline=baseline, error=errors.get(label, ''))
        rows.append(row)
    log(tag + ': ' + ', '.join(f'{r["variant"]} {r["median_ms"]:.1f} ms ({r["relative"]:.2f}x)'
                               for r in rows[-len(variants):]))
    return rows


def _fresh_copy(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    import copy
    m = copy.deepcopy(model).to(device)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def environment() -> Dict[str, Any]:
    """Versions and machine facts stored beside the results."""
    return dict(
        torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        machine=platform.machine(), processor=platform.processor(), cpu_count=os.cpu_count(),
        threads=torch.get_num_threads(), cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        mac_counter=MAC_COUNTER,
    )


def check_output(output_dir: str, overwrite: bool = False, plot: bool = True) -> Dict[str, Path]:
    """The result paths in ``output_dir``; a clear error if they exist and ``overwrite`` is not set."""
    out = Path(output_dir)
    paths = {'csv': out / 'results.csv', 'json': out / 'results.json'}
    if plot:
        paths['png'] = out / 'relative_cost.png'
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f'Benchmark results already exist: {existing}; pass --overwrite or another --output.')
    return paths


def write_results(
        rows: List[Dict[str, Any]],
        output_dir: str,
        cfg: Optional[BenchmarkConfig] = None,
        overwrite: bool = False,
        plot: bool = True,
        command: Optional[str] = None,
) -> Dict[str, Path]:
    """Write ``results.csv``, ``results.json`` (rows, config, environment) and ``relative_cost.png``.

    Existing result files are kept unless ``overwrite`` is set.
    """
    paths = check_output(output_dir, overwrite, plot)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f'{r[k]:.6g}' if isinstance(r[k], float) else r[k]) for k in CSV_COLUMNS})
    meta = dict(environment=environment(), config=dataclasses.asdict(cfg) if cfg else None, command=command)
    with open(paths['json'], 'w') as f:
        clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        json.dump(dict(meta, results=clean), f, indent=1, default=str)
    if plot:
        plot_relative_cost(rows, str(paths['png']))
    return paths
