""" The entry point of ``train.sh`` and ``validate.sh`` (the commands are :mod:`timm_mrap.training.commands`)

``python -m timm_mrap.training.cli train``                          the demo (:mod:`timm_mrap.training.demo`)
``python -m timm_mrap.training.cli train MODEL DATA_DIR [flags...]``  training; flags are timm train.py's
``python -m timm_mrap.training.cli validate MODEL DATA_DIR [--checkpoint F | --pretrained] [flags...]``

The runner (:mod:`timm_mrap.training.runner`) is timm's own script when it can be had, else the built-in twin.
Options of this layer (anywhere in the arguments); everything else goes to the runner as it is:

  --nproc N       processes per node (env NPROC; ``gpu`` = one per GPU); > 1 runs under torchrun
  --nnodes N      nodes (env NNODES); > 1 also needs NODE_RANK and MASTER_ADDR (MASTER_PORT, default 29500)
  --runner R      auto (default, env TIMM_MRAP_RUNNER), timm (fail if the scripts cannot be found), builtin
  --recipe NAME   a packaged recipe (rein100_paper, stanford_dogs_paper, mobilenet_mrap_modern, digits_demo) or a
                  YAML file, passed on as timm's --config
  --dry-run       print the commands instead of running them
"""
import sys
from typing import Optional, Sequence

from ..errors import InputError
from .commands import TRAIN_USAGE, VALIDATE_USAGE, parse_command_line, train_command, validate_command
from .demo import run_demo

__all__ = ['main']


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ('train', 'validate'):
        print(f'usage: python -m timm_mrap.training.cli {{train,validate}} ...\n{__doc__}', file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if any(a in ('-h', '--help') for a in args[:3]):
        print(f'{TRAIN_USAGE if command == "train" else VALIDATE_USAGE}\n{__doc__}')
        return 0
    try:
        if command == 'validate':
            return validate_command(args)[0]
        opts = parse_command_line(args)[0]
        if opts.model or opts.data_dir:
            return train_command(args)
        return run_demo(args)
    except InputError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
