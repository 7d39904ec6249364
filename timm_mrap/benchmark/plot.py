"""Plots of benchmark rows (matplotlib, imported lazily): each variant's cost relative to the baseline, one bar panel
per setting (``relative``), or that cost against the variant's parameters, one series per setting (``params``)."""
import math
from typing import Any, Dict, List

__all__ = ['PLOTS', 'plot_cost_vs_params', 'plot_relative_cost', 'setting_name']


def setting_name(row: Dict[str, Any]) -> str:
    """``'cpu bf16 eager train b32'`` for a result row."""
    return f'{row["device"]} {row["precision"]} {row["runtime"]} {row["mode"]} b{row["batch_size"]}'


def _pyplot():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError('The benchmark plot needs matplotlib: pip install "timm-mrap[plot]" (or --no-plot).') from e
    return plt


def plot_relative_cost(rows: List[Dict[str, Any]], path: str, dpi: int = 72) -> None:
    """Save a PNG of ``relative`` (median time / baseline median time) per variant and setting, with the IQR."""
    plt = _pyplot()
    settings = list(dict.fromkeys(setting_name(r) for r in rows))
    variants = list(dict.fromkeys(r['variant'] for r in rows))
    by_key = {(setting_name(r), r['variant']): r for r in rows}
    fig, axes = plt.subplots(1, len(settings), figsize=(2.2 + 2.6 * len(settings), 0.9 + 0.32 * len(variants)),
                             sharey=True, squeeze=False)
    for ax, setting in zip(axes[0], settings):
        vals, lo, hi = [], [], []
        for v in variants:
            r = by_key.get((setting, v))
            rel = r['relative'] if r else float('nan')
            base_ms = r['median_ms'] / rel if r and rel and not math.isnan(rel) else float('nan')
            vals.append(rel)
            lo.append(rel - r['q25_ms'] / base_ms if r and not math.isnan(base_ms) else 0.)
            hi.append(r['q75_ms'] / base_ms - rel if r and not math.isnan(base_ms) else 0.)
        y = list(range(len(variants)))
        colors = ['tab:red' if ':mrap' in v else 'tab:gray' if v == rows[0]['baseline'] else 'tab:blue'
                  for v in variants]
        ax.barh(y, [0. if math.isnan(x) else x for x in vals], xerr=[lo, hi], color=colors, capsize=2)
        ax.axvline(1., color='k', lw=0.8)
        ax.set_title(setting, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(f'time / {rows[0]["baseline"]}', fontsize=7)
        for yi, x in zip(y, vals):
            if not math.isnan(x):
                ax.text(x, yi, f' {x:.2f}', va='center', fontsize=6)
    axes[0][0].set_yticks(range(len(variants)))
    axes[0][0].set_yticklabels(variants)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_cost_vs_params(rows: List[Dict[str, Any]], path: str, dpi: int = 72) -> None:
    """Save a PNG of ``relative`` against ``params_m``: one marker series per setting, each point named by its
    ``attn`` (or variant). Rows of several runs can be drawn together: each ratio refers to its own run's baseline."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7., 4.5))
    for marker, setting in zip('osD^vP*X', dict.fromkeys(setting_name(r) for r in rows)):
        points = [r for r in rows if setting_name(r) == setting and not math.isnan(r['relative'])]
        ax.scatter([r['params_m'] for r in points], [r['relative'] for r in points], marker=marker, s=18,
                   label=setting, alpha=0.8)
    for r in {r['variant']: r for r in rows if setting_name(r) == setting_name(rows[0])}.values():
        if not math.isnan(r['relative']):
            ax.annotate(r['attn'] or r['variant'], (r['params_m'], r['relative']), fontsize=6, xytext=(2, 2),
                        textcoords='offset points')
    ax.axhline(1., color='k', lw=0.8)
    ax.set_xlabel('params (M)', fontsize=8)
    ax.set_ylabel('time / baseline', fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# --plot choice -> (file name, drawing function)
PLOTS = {'relative': ('relative_cost.png', plot_relative_cost), 'params': ('cost_vs_params.png', plot_cost_vs_params)}
