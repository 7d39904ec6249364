"""Command line: ``python -m timm_mrap.benchmark [--standard] [--output DIR]`` (see ``--help``)."""
import argparse
import dataclasses
import shlex
import sys
from typing import List, Optional

import torch

from .bench import VariantError, run_benchmark
from .config import DEFAULT_VARIANTS, MODES, PRECISIONS, RUNTIMES, STANDARD_SETTINGS, BenchmarkConfig
from .plot import PLOTS, setting_name
from .results import check_output, print_table, write_benchmark_results

__all__ = ['build_benchmark_parser', 'main']


def build_benchmark_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m timm_mrap.benchmark``; its destinations are ``BenchmarkConfig``'s fields."""
    p = argparse.ArgumentParser(
        prog='python -m timm_mrap.benchmark',
        description='Params, GMACs, latency and throughput of model / attention variants, measured side by side '
                    '(round-robin repeats). Ratios refer to the baseline variant (default: the first).')
    p.add_argument('--variants', nargs='+', default=list(DEFAULT_VARIANTS),
                   help='"model", "model:attn" (attn for our *_mrap models: any of timm_mrap.ATTN_CHOICES) or '
                        '"model:mrap:impl" (impl: auto reference fused triton)')
    p.add_argument('--baseline', default=None, help='variant the ratios refer to (default: the first)')
    p.add_argument('--device', dest='devices', nargs='+', default=None,
                   help='devices (default: cpu, plus cuda when available)')
    p.add_argument('--precision', dest='precisions', nargs='+', default=['fp32'], choices=PRECISIONS,
                   help='fp32, bf16 and / or fp16 (autocast; fp16 on CUDA); int8 (ExecuTorch)')
    p.add_argument('--runtimes', nargs='+', default=['eager'], choices=RUNTIMES,
                   help='eager, compile (torch.compile; ~1 min per model on CPU), onnxruntime (the default ONNX '
                        'export, fp32 CPU inference; needs timm-mrap[onnx]) and / or executorch (XNNPACK, fp32 / int8 '
                        'CPU inference; needs timm-mrap[mobile])')
    p.add_argument('--standard', action='store_true',
                   help='measure the settings of the README cost table instead of the product of '
                        '--precision / --runtimes / --modes / batch sizes: ' + ', '.join(STANDARD_SETTINGS))
    p.add_argument('--settings', nargs='+', default=None,
                   help='explicit settings precision:runtime:mode:batch, e.g. bf16:eager:train:32')
    p.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
    p.add_argument('--batch-sizes', dest='infer_batch_sizes', type=int, nargs='+', default=[1, 32],
                   help='inference batch sizes')
    p.add_argument('--train-batch-sizes', type=int, nargs='+', default=[32])
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--num-classes', type=int, default=1000)
    p.add_argument('--warmup', type=int, default=2, help='untimed steps per variant and setting (at least 1 runs)')
    p.add_argument('--repeats', type=int, default=7, help='timed repeats per variant, interleaved across variants')
    p.add_argument('--iters', type=int, default=1, help='steps per timed repeat')
    p.add_argument('--threads', type=int, default=None,
                   help='threads of torch, onnxruntime and ExecuTorch (default: their defaults)')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--output', default=None, help='folder for results.csv / results.json / the plot')
    p.add_argument('--overwrite', action='store_true', help='replace results already in --output')
    p.add_argument('--plot', default='relative', choices=tuple(PLOTS),
                   help='relative: relative_cost.png, bars of time / baseline per setting (default); params: '
                        'cost_vs_params.png, time / baseline against params')
    p.add_argument('--no-plot', action='store_true', help='skip the PNG (no matplotlib needed)')
    p.add_argument('--keep-going', action='store_true',
                   help='when a variant fails, measure the rest (its row records the error); the exit status is 1')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; 0 when every variant ran, 1 when one failed, 2 for bad input."""
    args = build_benchmark_parser().parse_args(argv)
    args.devices = args.devices or (['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    args.settings = list(STANDARD_SETTINGS) if args.standard else args.settings
    cfg = BenchmarkConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BenchmarkConfig)
                             if hasattr(args, f.name)})
    try:
        cfg.validate()
        if args.output:  # fail before measuring, not after
            check_output(args.output, args.overwrite, plot=None if args.no_plot else args.plot)
        rows = run_benchmark(cfg, keep_going=args.keep_going)
    except VariantError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except (ValueError, FileExistsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print_table(rows)
    if args.output:
        command = 'python -m timm_mrap.benchmark ' + ' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        paths = write_benchmark_results(rows, args.output, cfg, overwrite=args.overwrite,
                                        plot=None if args.no_plot else args.plot, command=command)
        print('wrote ' + ', '.join(str(p) for p in paths.values()))
    failed = sorted({f'{r["variant"]} ({setting_name(r)})' for r in rows if r['error']})
    if failed:
        print(f'error: {len(failed)} variant(s) failed: {", ".join(failed)}; their rows hold the errors.',
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
