""" Command line: write a Hub folder (prepare), upload it (push), write the architecture cards (cards); docs/hub.md """
import argparse
from typing import List, Optional

from timm.utils import ParseKwargs

from ..errors import TimmMrapError
from ..version import __version__
from .cards import stale_cards, write_cards
from .folder import WEIGHT_FORMATS, read_label_names, write_hub_folder
from .push import push_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m timm_mrap.hub', description=__doc__.strip())
    parser.add_argument('--version', action='version', version=f'timm-mrap {__version__}')
    sub = parser.add_subparsers(dest='command', required=True)

    ex = sub.add_parser('prepare', help='write a Hub folder (model.safetensors, config.json, README.md); no upload')
    ex.add_argument('src', help='training checkpoint, .safetensors state dict, Hub folder or reference checkpoint')
    ex.add_argument('--out', required=True, help='folder to write (must not exist or be empty, see --overwrite)')
    ex.add_argument('--model', default=None, help='architecture[.tag], e.g. mobilenetv2_mrap (default: the checkpoint)')
    ex.add_argument('--tag', default=None, help='pretrained tag naming the training data (default: the default tag)')
    ex.add_argument('--repo-id', default=None, help='Hub repo for the card (default: the repo pretrained=True loads)')
    ex.add_argument('--num-classes', type=int, default=None, help='expected classes (default: from the classifier)')
    ex.add_argument('--label-names', default=None, help='class names: a text file (one per line) or the image folder')
    ex.add_argument('--use-ema', action='store_true', help='take the EMA weights (state_dict_ema) of a checkpoint')
    ex.add_argument('--format', default='auto', choices=WEIGHT_FORMATS, help='weights key layout (default: by keys)')
    ex.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='model arguments, e.g. attn=cbam')
    ex.add_argument('--img-size', type=int, default=None, help='input size of these weights (default: checkpoint)')
    ex.add_argument('--crop-pct', type=float, default=None, help='eval crop fraction (default: checkpoint / model)')
    ex.add_argument('--interpolation', default=None, help='resize interpolation (default: checkpoint / model)')
    ex.add_argument('--mean', type=float, nargs=3, default=None, help='normalisation mean (default: checkpoint)')
    ex.add_argument('--std', type=float, nargs=3, default=None, help='normalisation std (default: checkpoint)')
    ex.add_argument('--dataset', default=None, help='training data for the card (default: from the tag)')
    ex.add_argument('--dataset-id', default=None, help='Hub dataset id for the card front matter')
    ex.add_argument('--license', default=None, help='weights licence (default: apache-2.0)')
    ex.add_argument('--results', default=None, help='validate.py results file of these weights (JSON / CSV)')
    ex.add_argument('--compare', nargs='*', default=(), help='results files of other models for the comparison')
    ex.add_argument('--card-dir', default=None, help='folder of cards to use instead of the packaged ones (hf_cards/)')
    ex.add_argument('--overwrite', action='store_true', help='replace an earlier Hub folder in --out')

    push = sub.add_parser('push', help='upload a Hub folder to the Hugging Face Hub')
    push.add_argument('folder', help='folder written by prepare')
    push.add_argument('--repo-id', required=True, help='organisation/name on the Hub, as given to prepare')
    push.add_argument('--revision', default=None, help='branch to commit to (created when missing; default main)')
    push.add_argument('--private', action='store_true', help='create the repo private')
    push.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    push.add_argument('--overwrite', action='store_true', help='replace README.md / model.safetensors already there')
    push.add_argument('--commit-message', default=None, help='commit title')

    cards = sub.add_parser('cards', help='write the architecture cards (hf_cards/) from the packaged template + facts')
    cards.add_argument('folder', help='folder to write, usually hf_cards')
    cards.add_argument('--check', action='store_true', help='write nothing; exit 1 when a card differs from the source')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == 'prepare':
            data_config = {k: getattr(args, k) for k in ('img_size', 'crop_pct', 'interpolation', 'mean', 'std')}
            result = write_hub_folder(
                args.src, args.out, model_name=args.model, tag=args.tag, repo_id=args.repo_id, use_ema=args.use_ema,
                label_names=read_label_names(args.label_names) if args.label_names else None, license=args.license,
                num_classes=args.num_classes, weights_format=args.format, model_kwargs=args.model_kwargs,
                data_config=data_config, dataset=args.dataset, dataset_id=args.dataset_id, results=args.results,
                compare=args.compare, card_dir=args.card_dir, overwrite=args.overwrite)
            stats = result.stats
            accuracy = f'top-1 {result.results["top1"]:.2f}' if result.results else 'accuracy not yet measured'
            print(f'Wrote {result.out_dir}: {result.model.pretrained_cfg["architecture"]}, '
                  f'{result.model.num_classes} classes, {stats.params / 1e6:.2f} M params, '
                  f'{stats.macs / 1e9:.3f} GMACs at {stats.image_size}, {accuracy}')
            print(f"Check it: timm.create_model('local-dir:{result.out_dir}', pretrained=True); "
                  f'publish it: python -m timm_mrap.hub push {result.out_dir} --repo-id {result.repo_id}')
        elif args.command == 'cards':
            if args.check:
                stale = stale_cards(args.folder)
                if stale:
                    parser.exit(1, 'Out of date (python -m timm_mrap.hub cards ' + args.folder + ' rewrites them):\n'
                                + ''.join(f'  {s}\n' for s in stale))
                print(f'{args.folder}: every card matches the packaged template and facts.')
            else:
                paths = write_cards(args.folder)
                print(f'Wrote {len(paths)} cards to {args.folder}: {", ".join(p.stem for p in paths)}')
        else:
            info = push_folder(args.folder, args.repo_id, revision=args.revision, private=args.private,
                               create_pr=args.create_pr, overwrite=args.overwrite, commit_message=args.commit_message)
            print(f'Pushed {args.folder} to {args.repo_id}: {info.pr_url or info.commit_url}')
    except (TimmMrapError, FileExistsError, FileNotFoundError) as e:
        parser.exit(2, f'error: {e}\n')


if __name__ == '__main__':
    main()
