"""Benchmark results: the Markdown table, and ``results.csv`` / ``results.json`` / the plot's PNG files."""
import csv
import dataclasses
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import timm
import torch

from ..complexity import MAC_COUNTER
from .config import BenchmarkConfig
from .plot import PLOTS, setting_name

__all__ = ['CSV_COLUMNS', 'check_output', 'environment', 'print_table', 'write_benchmark_results']

CSV_COLUMNS = (
    'variant', 'model', 'attn', 'mrap_impl', 'device', 'precision', 'runtime', 'mode', 'batch_size', 'img_size',
    'params_m', 'gmacs', 'median_ms', 'q25_ms', 'q75_ms', 'min_ms', 'max_ms', 'repeats', 'throughput', 'relative',
    'baseline', 'error',
)


def print_table(rows: List[Dict[str, Any]]) -> None:
    """Markdown table: one line per variant, one column (ratio and median ms) per setting."""
    names = list(dict.fromkeys(setting_name(r) for r in rows))
    cell = {(r['variant'], setting_name(r)): r for r in rows}
    by_variant = {r['variant']: r for r in rows}  # params and GMACs: the same in every row of a variant
    print('| variant | params (M) | GMACs | ' + ' | '.join(names) + ' |')
    print('|---|---:|---:|' + '---:|' * len(names))
    for v, r in by_variant.items():
        cells = ['failed' if c is None or c['error'] else f'{c["relative"]:.2f}x ({c["median_ms"]:.1f} ms)'
                 for c in (cell.get((v, s)) for s in names)]
        print(f'| {v} | {r["params_m"]:.3f} | {r["gmacs"]:.3f} | ' + ' | '.join(cells) + ' |')


# CPU features that change which kernels run: x86 vector widths and int8 dot products, Arm dot products and i8mm
SPEED_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8', 'asimddp', 'i8mm')


def environment() -> Dict[str, Any]:
    """Versions and machine facts stored beside the results."""
    name, flags = cpu_info()
    return dict(
        torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        machine=platform.machine(), processor=name, cpu_flags=' '.join(f for f in SPEED_FLAGS if f in flags),
        cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu_count=os.cpu_count(),
        threads=torch.get_num_threads(), cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        mac_counter=MAC_COUNTER,
    )


def cpu_info(path: str = '/proc/cpuinfo') -> Tuple[str, Set[str]]:
    """The CPU's model name and feature flags, from ``/proc/cpuinfo`` where there is one (int8 and vector speed
    depend on them: ratios measured on different CPUs differ); ``platform.processor()`` and no flags elsewhere."""
    name, flags = '', set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in ('model name', 'Hardware') and not name:
                    name = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor(), flags


def check_output(output_dir: str, overwrite: bool = False, plot: Optional[str] = 'relative') -> Dict[str, Path]:
    """The result paths in ``output_dir`` (``plot``: a ``PLOTS`` name or None); a clear error if they exist and
    ``overwrite`` is not set."""
    out = Path(output_dir)
    paths = {'csv': out / 'results.csv', 'json': out / 'results.json'}
    if plot:
        paths['png'] = out / PLOTS[plot][0]
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f'Benchmark results already exist: {existing}; pass --overwrite or another --output.')
    return paths


def write_benchmark_results(
        rows: List[Dict[str, Any]],
        output_dir: str,
        cfg: Optional[BenchmarkConfig] = None,
        overwrite: bool = False,
        plot: Optional[str] = 'relative',
        command: Optional[str] = None,
) -> Dict[str, Path]:
    """Write ``results.csv``, ``results.json`` (rows, config, environment, command) and the ``plot`` (a ``PLOTS``
    name: ``relative_cost.png`` or ``cost_vs_params.png``; None for none).

    Existing result files are kept unless ``overwrite`` is set.
    """
    paths = check_output(output_dir, overwrite, plot)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: (f'{r[k]:.6g}' if isinstance(r[k], float) else r[k]) for k in CSV_COLUMNS} for r in rows)
    meta = dict(environment=environment(), config=dataclasses.asdict(cfg) if cfg else None, command=command)
    with open(paths['json'], 'w') as f:
        clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        json.dump(dict(meta, results=clean), f, indent=1, default=str)
    if plot:
        PLOTS[plot][1](rows, str(paths['png']))
    return paths
