""" Run a timm script (train.py, validate.py, benchmark.py, ...) unchanged, with the timm-mrap models registered

``[torchrun ...] python -m timm_mrap.training.launch SCRIPT [script args...]``. A ``timm/`` folder beside the script or
in the working directory (a timm checkout) never replaces the installed timm: the script's folder goes to the end of
``sys.path``, and a timm imported from the working directory makes the launcher restart without it.
"""
import argparse
import os
import runpy
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ['run_script', 'main']

_REEXEC_ENV = '_TIMM_MRAP_LAUNCH_REEXEC'


def _log(msg: str) -> None:
    if os.environ.get('RANK', '0') == '0':  # one line per job under torchrun, not one per rank
        print(f'[timm_mrap.launch] {msg}', file=sys.stderr, flush=True)


def _restart_without_cwd_if_shadowed(argv: Sequence[str]) -> None:
    """Restart the launcher without the working directory on ``sys.path`` (which ``python -m`` puts first) when a
    ``timm/`` there shadows the installed timm."""
    import timm
    root = Path(timm.__file__).resolve().parent.parent
    cwd = os.path.realpath(os.getcwd())
    if root != Path(cwd) or not any(p == '' or os.path.realpath(p) == cwd for p in sys.path):
        return
    from importlib.machinery import PathFinder
    installed = PathFinder.find_spec('timm', [p for p in sys.path if p and Path(p).resolve() != root])
    if installed is None or not installed.origin:
        _log(f'using timm from the working directory {root} (no other timm is installed)')
        return
    if os.environ.get(_REEXEC_ENV):
        raise RuntimeError(
            f'timm is still imported from {root} after restarting without the working directory on sys.path; '
            f'run from another folder (cd elsewhere) or set PYTHONPATH so that the installed timm comes first.')
    _log(f'the timm/ folder in the working directory {root} shadows the installed timm ({installed.origin}); '
         f'restarting without the working directory on sys.path')
    bootstrap = (
        'import os, sys\n'
        'cwd = os.path.realpath(os.getcwd())\n'
        "sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != cwd]\n"
        'from timm_mrap.training.launch import main\n'
        'main(sys.argv[1:])\n'
    )
    env = dict(os.environ, **{_REEXEC_ENV: '1'})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, '-c', bootstrap, *argv], env)


def run_script(script: str, args: Sequence[str], download: bool = True) -> None:
    """Register the timm-mrap models, then run ``script`` (a path or a name for :func:`.scripts.find_script`) as
    ``__main__`` with ``sys.argv = [script, *args]``."""
    import timm
    import timm_mrap  # noqa: F401  (registers the models)
    from .scripts import find_script

    path = find_script(script, download=download)
    _log(f'timm {timm.__version__} from {Path(timm.__file__).resolve().parent}; '
         f'timm_mrap {timm_mrap.__version__} registered {len(timm.list_models("*_mrap") + timm.list_models("*_mafc"))} '
         f'models; running {path}')
    # like `python script.py`, the script's siblings are importable, but appended: they never shadow timm
    script_dir = str(path.parent)
    if script_dir not in sys.path:
        sys.path.append(script_dir)
    sys.argv = [str(path), *args]
    runpy.run_path(str(path), run_name='__main__')


def _build_launch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m timm_mrap.training.launch',
        description='Run a timm script (train.py, validate.py, ...) with the timm-mrap models registered. SCRIPT is '
                    'a path, or a name looked up in $TIMM_SCRIPTS_DIR, the cache, then downloaded (docs/training.md). '
                    'Launcher options go before SCRIPT; every argument after it goes to the script.')
    parser.add_argument('--find', action='store_true',
                        help='resolve the named scripts (downloading into the cache if needed), print their paths')
    parser.add_argument('--no-download', action='store_true', help='never download; TIMM_SCRIPTS_DIR or the cache')
    parser.add_argument('script', metavar='SCRIPT')
    parser.add_argument('script_args', nargs=argparse.REMAINDER, metavar='...')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    _restart_without_cwd_if_shadowed(argv)
    from .scripts import ScriptNotFoundError, find_script
    args = _build_launch_parser().parse_args(argv)
    try:
        if args.find:
            for name in [args.script, *args.script_args]:
                print(find_script(name, download=not args.no_download))
            return
        run_script(args.script, args.script_args, download=not args.no_download)
    except ScriptNotFoundError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
