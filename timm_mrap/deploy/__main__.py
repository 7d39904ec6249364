""" Export an MRAP MobileNet for a runtime (ONNX, ExecuTorch, Core ML, LiteRT) and check it against PyTorch

``python -m timm_mrap.deploy --model mobilenetv2_mrap [--format executorch --int8 ...]``: the flags and examples are
in docs/deployment.md. Every warning raised while the model is loaded and exported is printed.
"""
import argparse
import re
import sys
import warnings
from typing import List, Optional

from timm.utils import ParseKwargs

from ..checkpoint import load_model
from ..errors import TimmMrapError
from . import (
    EXPORTERS, FORMATS, SUFFIXES, add_model_arguments, calibration_batches, check_export, export_model, model_stride,
    runtime_predictor, top1_accuracy,
)

__all__ = ['build_deploy_parser', 'main']


def build_deploy_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m timm_mrap.deploy`` (docs/deployment.md describes each flag)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], prog='python -m timm_mrap.deploy')
    add_model_arguments(parser)
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='e.g. attn=cbam')
    parser.add_argument('--format', choices=FORMATS, default='onnx')
    parser.add_argument('--out', help='output file (default: MODEL[_int8] with the format\'s suffix)')
    parser.add_argument('--img-size', type=int, default=224, help='height = width of the example / program input')
    parser.add_argument('--in-chans', type=int, default=3)
    parser.add_argument('--batch-size', type=int, help='(default: 1; ONNX traces with 2, its batch stays dynamic)')
    parser.add_argument('--int8', action='store_true', help='ExecuTorch only: int8 quantization (PT2E, XNNPACK)')
    parser.add_argument('--calibration-dir', help='int8: image folder to calibrate on (default: random inputs)')
    parser.add_argument('--calibration-count', type=int, default=64, help='int8: images to calibrate on')
    parser.add_argument('--exporter', choices=EXPORTERS, default='dynamo', help='ONNX exporter')
    parser.add_argument('--static-size', action='store_true', help='ONNX: fix height and width (batch stays dynamic)')
    parser.add_argument('--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    parser.add_argument('--check-sizes', type=int, nargs='*',
                        help='ONNX: image sizes to check at (default: the smallest input, --img-size and twice it)')
    parser.add_argument('--no-check', action='store_true', help='skip the comparison with PyTorch')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='max |runtime - torch| / max(1, max |torch|) (default 1e-4; int8 is reported only)')
    parser.add_argument('--eval-dir', help='ImageFolder split (or its parent) to report the top-1 on')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    return parser


def _ignore_noise() -> None:
    """Hide the warnings of other libraries about their own internals, by category and module (never by text)."""
    warnings.simplefilter('default')
    warnings.filterwarnings('ignore', category=DeprecationWarning)
    warnings.filterwarnings('ignore', category=ResourceWarning)  # timm's image folders hand PIL files it never closes
    warnings.filterwarnings('ignore', module=r'executorch\.extension\.pybindings')  # "this API is experimental"


def _export(args: argparse.Namespace, batch_size: int):
    """Load the model, calibrate (int8) and export; returns the model and the path written."""
    model = load_model(args.model, args.checkpoint, args.pretrained, args.num_classes, **args.model_kwargs)
    options = dict(exporter=args.exporter, dynamic_size=not args.static_size, opset=args.opset)
    if args.format != 'onnx':
        options = dict(int8=True) if args.int8 else {}
    if args.int8 and args.calibration_dir:
        options['calibration'] = calibration_batches(
            model, args.calibration_dir, args.calibration_count, batch_size, img_size=args.img_size)
        print(f'Calibrating on {sum(len(b) for b in options["calibration"])} images of {args.calibration_dir}')
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', args.model.split(':')[-1].rstrip('/')).strip('_') or 'model'
    out = args.out or f'{name}{"_int8" if args.int8 else ""}{SUFFIXES[args.format]}'
    path = export_model(model, args.format, out, (args.in_chans, args.img_size, args.img_size), batch_size,
                        overwrite=args.overwrite, **options)
    return model, path


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_deploy_parser()
    args = parser.parse_args(argv)
    if args.format != 'onnx' and (args.static_size or args.check_sizes or args.opset or args.exporter != 'dynamo'):
        parser.error('--exporter, --static-size, --opset and --check-sizes are ONNX options; the phone formats '
                     'have a static input of --batch-size x --in-chans x --img-size x --img-size.')
    if args.format != 'executorch' and (args.int8 or args.calibration_dir):
        parser.error('--int8 and --calibration-dir are for --format executorch (XNNPACK int8).')
    batch_size = args.batch_size or (2 if args.format == 'onnx' else 1)
    with warnings.catch_warnings(record=True) as caught:
        _ignore_noise()
        try:
            model, path = _export(args, batch_size)
        except (TimmMrapError, FileExistsError, FileNotFoundError, ValueError) as e:
            parser.exit(2, f'error: {e}\n')
        finally:
            for message in dict.fromkeys(f'{w.category.__name__}: {w.message}' for w in caught):
                print(f'warning: {message}', file=sys.stderr)
    dynamic = args.format == 'onnx' and not args.static_size
    size = 'H x W' if dynamic else f'{args.img_size} x {args.img_size}'
    shape = f'{"batch" if args.format == "onnx" else batch_size} x {args.in_chans} x {size}'
    print(f'Wrote {path} ({args.format}{" int8" if args.int8 else ""}, input {shape})')
    if args.eval_dir:
        _report_top1(args, model, str(path))
    if not args.no_check:
        _report_check(args, parser, model, str(path), batch_size)


def _report_check(args: argparse.Namespace, parser: argparse.ArgumentParser, model, path: str, batch_size: int):
    sizes = args.check_sizes
    if sizes is None:
        sizes = [args.img_size] if args.static_size else sorted({model_stride(model), args.img_size, 2 * args.img_size})
    input_shape = (batch_size, args.in_chans, args.img_size, args.img_size)
    results = check_export(model, args.format, path, input_shape, onnx_sizes=[(s, s) for s in sizes])
    if results is None:
        print('Not checked: Core ML models run on Apple platforms only (the conversion and the saved package were '
              'checked here).')
        return
    failed = False
    for (h, w), (diff, scale) in results.items():
        ok = args.int8 or diff <= args.tolerance * max(1., scale)
        failed |= not ok
        verdict = 'int8, reported' if args.int8 else ('ok' if ok else 'FAIL')
        print(f'{h} x {w}: max |{args.format} - torch| = {diff:.3g} (max |torch| = {scale:.3g}, '
              f'relative {diff / max(1., scale):.2g}) {verdict}')
    if failed:
        parser.exit(1, f'error: {args.format} differs from PyTorch by more than {args.tolerance} (relative)\n')


def _report_top1(args: argparse.Namespace, model, path: str) -> None:
    if args.format == 'coreml':
        print('Top-1 not measured: Core ML models run on Apple platforms only.')
        return
    runtime = f'{args.format}{" int8" if args.int8 else ""}'
    top1 = top1_accuracy(model, args.eval_dir, {'pytorch': model, runtime: runtime_predictor(args.format, path)},
                         img_size=args.img_size)
    print(f'Top-1 on {args.eval_dir}: ' + ', '.join(f'{name} {acc:.2f}%' for name, acc in top1.items()))


if __name__ == '__main__':
    main()

