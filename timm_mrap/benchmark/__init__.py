"""Side-by-side cost of attention variants: params, MACs, latency / throughput (inference, training), in eager
PyTorch, ``torch.compile`` and onnxruntime, at fp32, bf16 and fp16.

``run_benchmark`` measures, ``write_results`` saves CSV / JSON and ``plot_relative_cost`` draws the cost relative to a
baseline variant. ``python -m timm_mrap.benchmark`` is the command-line front end.
"""
from .bench import (
    STANDARD_SETTINGS, BenchmarkConfig, Variant, parse_setting, parse_variants, run_benchmark, summarize,
    write_results)
from .plot import plot_relative_cost

__all__ = [
    'STANDARD_SETTINGS', 'BenchmarkConfig', 'Variant', 'parse_setting', 'parse_variants', 'run_benchmark',
    'summarize', 'write_results',
    'plot_relative_cost',
]
