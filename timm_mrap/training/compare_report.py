"""Reports of an attention comparison: ``results.csv``, ``summary.md`` and (with matplotlib) a top-1 / latency plot"""
import csv
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

__all__ = ['RESULT_COLUMNS', 'summarize_grid', 'summary_markdown', 'plot_top1_vs_latency', 'write_reports']

# one row of the comparison per run, in this order (results.csv)
RESULT_COLUMNS = ('attn', 'seed', 'top1', 'top5', 'epochs', 'best_epoch', 'params', 'gmacs', 'wall_s', 'run_dir')


def summarize_grid(rows: Sequence[Dict[str, Any]], attns: Sequence[str],
                   latency: Dict[str, Dict[str, float]]) -> List[Dict[str, Any]]:
    """One row per attention of ``attns`` (in that order) from the per-run ``rows`` and the benchmark's ``latency``
    (``{attn: {'relative', 'median_ms'}}``): top-1 mean, sample std (0 for one seed), min and max, top-5 mean,
    ``delta_none`` (None without a ``none`` row), params, GMACs, latency ratio and ms."""
    out = []
    for attn in attns:
        runs = [r for r in rows if r['attn'] == attn]
        top1 = [float(r['top1']) for r in runs]
        out.append(dict(
            attn=attn, seeds=[r['seed'] for r in runs], top1_mean=statistics.fmean(top1),
            top1_std=statistics.stdev(top1) if len(top1) > 1 else 0., top1_min=min(top1), top1_max=max(top1),
            top5_mean=statistics.fmean(float(r['top5']) for r in runs), params=runs[0]['params'],
            gmacs=runs[0]['gmacs'], latency_ratio=latency[attn]['relative'], latency_ms=latency[attn]['median_ms']))
    none = next((s for s in out if s['attn'] == 'none'), None)
    for s in out:
        s['delta_none'] = s['top1_mean'] - none['top1_mean'] if none else None
    return out


def summary_markdown(plan, summary: Sequence[Dict[str, Any]]) -> str:
    """``summary.md``: the table and one paragraph on how each column was measured."""
    cfg = plan.cfg
    seeds = ', '.join(map(str, cfg.seeds))
    lines = [f'# Attention comparison: {plan.model}', '',
             '| attention | seeds | top-1 (%) | vs none | top-5 (%) | params (M) | GMACs | latency vs none |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for s in summary:
        delta = '—' if s['delta_none'] is None or s['attn'] == 'none' else f'{s["delta_none"]:+.2f}'
        lines.append(
            f'| {s["attn"]} | {len(s["seeds"])} | {s["top1_mean"]:.2f} ± {s["top1_std"]:.2f} | {delta} | '
            f'{s["top5_mean"]:.2f} | {s["params"] / 1e6:.3f} | {s["gmacs"]:.3f} | {s["latency_ratio"]:.2f}x |')
    recipe = f'recipe {cfg.recipe}' if cfg.recipe else "timm's default recipe"
    epochs = f'{plan.epochs} epoch{"s" if plan.epochs > 1 else ""}'
    flags = f', flags `{" ".join(cfg.train_args)}`' if cfg.train_args else ''
    lines += ['', (
        f'Top-1 / top-5: the best checkpoint of each run validated on the validation split of {cfg.data_dir}, mean ± '
        f'sample standard deviation over seeds {seeds}; "vs none" is the difference of the means. Training: '
        f'{recipe}, {epochs}{flags}. Params and GMACs: {plan.num_classes} classes, {plan.img_size} px '
        f'(timm_mrap.complexity). Latency: eager fp32 inference at batch {cfg.latency_batch}, {plan.img_size} px on '
        f"{plan.device}, median time relative to attn='none' (timm_mrap.benchmark; latency/results.csv). Every run: "
        f'results.csv.')]
    return '\n'.join(lines) + '\n'


def plot_top1_vs_latency(summary: Sequence[Dict[str, Any]], path: str, title: str, dpi: int = 100) -> None:
    """Top-1 (mean; bars from the lowest to the highest seed) against the latency ratio, one point per attention."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for s in summary:
        x, y = s['latency_ratio'], s['top1_mean']
        if math.isnan(x):
            continue
        color = 'tab:red' if s['attn'] == 'mrap' else 'tab:gray' if s['attn'] == 'none' else 'tab:blue'
        ax.errorbar([x], [y], yerr=[[y - s['top1_min']], [s['top1_max'] - y]], fmt='o', color=color, capsize=3)
        ax.annotate(s['attn'], (x, y), textcoords='offset points', xytext=(6, 4), fontsize=8)
    ax.set_xlabel("latency / attn='none' (eager fp32 inference)")
    ax.set_ylabel('top-1 (%), mean and seed range')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_reports(plan, rows: Sequence[Dict[str, Any]], summary: Sequence[Dict[str, Any]],
                  log: Callable[[str], None] = print) -> Dict[str, Path]:
    """Write ``results.csv``, ``summary.md`` and (with matplotlib) ``top1_vs_latency.png`` into the grid's output."""
    out = Path(plan.cfg.output)
    paths = {'csv': out / 'results.csv', 'summary': out / 'summary.md'}
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: f'{r[k]:.6g}' if isinstance(r[k], float) else r[k] for k in RESULT_COLUMNS})
    paths['summary'].write_text(summary_markdown(plan, summary))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log('[compare] no plot: matplotlib is not installed (pip install "timm-mrap[plot]")')
        return paths
    paths['plot'] = out / 'top1_vs_latency.png'
    seeds = len(plan.cfg.seeds)
    plot_top1_vs_latency(summary, str(paths['plot']), f'{plan.model}, {plan.epochs} epochs, {seeds} seeds')
    return paths
