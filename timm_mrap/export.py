""" Export an MRAP MobileNet to ONNX (dynamic batch, height and width) and check it against PyTorch

Usage::

    python -m timm_mrap.export --model mobilenetv2_mrap --out mobilenetv2_mrap.onnx --check-sizes 160 224 256
    python -m timm_mrap.export --model local-dir:converted/ --pretrained --out m.onnx --exporter torchscript

The library functions live in ``timm_mrap.deploy`` (``export_onnx``, ``onnx_parity``, ``load_model``).
"""
import argparse
from typing import List, Optional

from timm.utils import ParseKwargs

from .deploy import EXPORTERS, CheckpointError, add_model_arguments, export_onnx, load_model, onnx_parity

__all__ = ['main']


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], prog='python -m timm_mrap.export')
    add_model_arguments(parser)
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                        help='extra create_model arguments, e.g. attn=cbam')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--img-size', type=int, default=224, help='height = width of the traced example input')
    parser.add_argument('--in-chans', type=int, default=3, help='channels of the example input')
    parser.add_argument('--batch-size', type=int, default=2, help='batch of the traced example input (>= 2)')
    parser.add_argument('--exporter', choices=EXPORTERS, default='dynamo',
                        help='dynamo (torch default, slow) or torchscript (legacy tracer, fast)')
    parser.add_argument('--static-size', action='store_true', help='fix height and width (batch stays dynamic)')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset (default: the exporter\'s)')
    parser.add_argument('--check-sizes', type=int, nargs='*', default=[],
                        help='image sizes at which to compare onnxruntime with PyTorch after export')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='max |onnx - torch| allowed, relative to max(1, max |torch|) (default 1e-4)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out file')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, args.checkpoint, args.pretrained, args.num_classes, **args.model_kwargs)
        path = export_onnx(
            model, args.out, (args.in_chans, args.img_size, args.img_size), args.batch_size, args.exporter,
            dynamic_size=not args.static_size, opset=args.opset, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as e:
        parser.exit(2, f'error: {e}\n')
    print(f'Wrote {path} ({args.exporter} exporter, input input0: '
          f'batch x {args.in_chans} x {"H x W" if not args.static_size else f"{args.img_size} x {args.img_size}"})')
    if args.check_sizes:
        sizes = [(s, s) for s in args.check_sizes]
        failed = False
        for (h, w), (diff, scale) in onnx_parity(model, str(path), sizes).items():
            ok = diff <= args.tolerance * max(1., scale)
            failed |= not ok
            print(f'{h} x {w}: max |onnx - torch| = {diff:.3g} (max |torch| = {scale:.3g}) {"ok" if ok else "FAIL"}')
        if failed:
            parser.exit(1, f'error: onnxruntime differs from PyTorch by more than {args.tolerance} (relative)\n')


if __name__ == '__main__':
    main()
