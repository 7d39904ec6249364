""" Compare attentions on one backbone with one recipe, over seeds: a table and a plot

Every (attention, seed) is trained with ``train.sh``'s launcher (timm's ``train.py`` or the built-in trainer, on one or
several GPUs), its best checkpoint validated, and the results collected. Finished runs are skipped on a rerun and an
interrupted one resumes. The logic is in :mod:`timm_mrap.training.comparison`; ``--help`` has the usage.
"""
import argparse
import sys
from typing import List, Optional


def build_compare_parser() -> argparse.ArgumentParser:
    from timm_mrap.layers import ATTN_CHOICES
    p = argparse.ArgumentParser(
        prog='python -m timm_mrap.compare', allow_abbrev=False,
        usage='python -m timm_mrap.compare DATA_DIR [--model M] [--attn A ...] [--seeds S ...] [--recipe NAME] '
              '[--epochs N] [--output DIR] [--overwrite] [timm train.py flags...]',
        description='Train and validate MODEL with each attention and seed, with the same recipe; write results.csv, '
                    'summary.md (top-1 mean ± std over seeds, params, GMACs, latency) and top1_vs_latency.png. '
                    'Other arguments are timm train.py flags (and train.sh\'s --nproc, --nnodes, --runner).')
    p.add_argument('data_dir', metavar='DATA_DIR', help='ImageFolder root: DATA_DIR/train/<class>/*, '
                                                        'DATA_DIR/validation/<class>/* (or val/)')
    p.add_argument('--model', default=None, help='a model with attn= choices, e.g. mobilenetv3_mrap (default: '
                                                 "the recipe's)")
    p.add_argument('--attn', nargs='+', default=['none', 'se', 'eca', 'cbam', 'mrap'],
                   help=f'attentions, in the order to report them (of {" ".join(ATTN_CHOICES)}; default: '
                        f'none se eca cbam mrap)')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2], help='training seeds (default: 0 1 2)')
    p.add_argument('--recipe', default=None, help='packaged recipe (rein100_paper, stanford_dogs_paper, '
                                                  'mobilenet_mrap_modern, digits_demo) or a YAML file')
    p.add_argument('--epochs', type=int, default=None, help="epochs per run (default: the recipe's)")
    p.add_argument('--output', default='output/compare', help='folder for the runs and reports '
                                                             '(default: output/compare)')
    p.add_argument('--overwrite', action='store_true', help='replace the runs and reports of another grid in --output')
    p.add_argument('--latency-batch', type=int, default=1, help='batch size of the latency measurement (default: 1)')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from timm_mrap.training.comparison import CompareConfig, CompareError, run_compare
    parser = build_compare_parser()
    args, train_args = parser.parse_known_args(argv)
    cfg = CompareConfig(
        data_dir=args.data_dir, model=args.model, attns=args.attn, seeds=args.seeds, recipe=args.recipe,
        epochs=args.epochs, output=args.output, train_args=train_args, overwrite=args.overwrite,
        latency_batch=args.latency_batch)
    try:
        result = run_compare(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except CompareError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted: rerun the same command to resume the grid', file=sys.stderr)
        return 130
    best, none = result['best'], next((s for s in result['summary'] if s['attn'] == 'none'), None)
    versus = f' (none {none["top1_mean"]:.2f} ± {none["top1_std"]:.2f}%)' if none and none is not best else ''
    minutes, seconds = divmod(int(result['wall_s']), 60)
    print(f'Compare done: best attention {best["attn"]}, top-1 {best["top1_mean"]:.2f} ± {best["top1_std"]:.2f}%'
          f'{versus}; {len(result["rows"])} runs ({result["trained"]} run now, {result["skipped"]} already done) '
          f'in {minutes} min {seconds} s. Results: {cfg.output}/ ('
          + ', '.join(p.name for p in result['paths'].values()) + ')', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
