"""Side-by-side cost of attention variants: params, MACs, latency / throughput (inference, training), in eager
PyTorch, ``torch.compile``, onnxruntime and ExecuTorch, at fp32, bf16, fp16 and int8.

``BenchmarkConfig`` says what to measure (``config``), ``run_benchmark`` measures (``bench``),
``write_benchmark_results`` saves CSV / JSON and ``plot_relative_cost`` draws the cost relative to a baseline variant
(``results``, ``plot``). ``python -m timm_mrap.benchmark`` is the command-line front end.
"""
from .bench import VariantError, run_benchmark, summarize_times
from .config import STANDARD_SETTINGS, BenchmarkConfig, Variant, parse_setting, parse_variants
from .plot import plot_relative_cost
from .results import CSV_COLUMNS, check_output, print_table, write_benchmark_results

__all__ = [
    'CSV_COLUMNS', 'STANDARD_SETTINGS', 'BenchmarkConfig', 'Variant', 'VariantError', 'check_output',
    'parse_setting', 'parse_variants', 'plot_relative_cost', 'print_table', 'run_benchmark', 'summarize_times',
    'write_benchmark_results',
]
