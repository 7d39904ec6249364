""" Choose the runner (timm's scripts through :mod:`.launch`, else the built-in twins), build its command line (under
torchrun for several processes or nodes) and run it
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import CliError
from .input_checks import model_from_checkpoint

__all__ = ['log', 'resolve_runner', 'build_command', 'run_command', 'checkpoint_args']


def log(msg: str) -> None:
    print(f'[timm_mrap] {msg}', file=sys.stderr, flush=True)


def resolve_runner(kind: str, runner: str) -> Tuple[str, Optional[Path]]:
    """``('timm', script path)`` when timm's ``<kind>.py`` (``train`` / ``validate``) can be had, else ``('builtin',
    None)``; ``runner`` is ``auto``, ``timm`` (an error when the script cannot be had) or ``builtin``."""
    if runner == 'builtin':
        return 'builtin', None
    from .scripts import ScriptNotFoundError, find_script
    try:
        return 'timm', find_script(f'{kind}.py')
    except ScriptNotFoundError as e:
        if runner == 'timm':
            raise CliError(f'--runner timm: {e}') from e
        log(f"timm's {kind}.py is not available ({str(e).splitlines()[0]}); using the built-in "
            f"timm_mrap.training.builtin.{kind}. For timm's own script set TIMM_SCRIPTS_DIR to a timm checkout.")
        return 'builtin', None


def build_command(kind: str, runner: str, script: Optional[Path], args: List[str], nproc: str = '1', nnodes: int = 1,
                  env: Optional[Dict[str, str]] = None) -> List[str]:
    """The command line: ``python -m <launcher | built-in> ...``, under torchrun for several processes or nodes."""
    env = os.environ if env is None else env
    target = ['-m', 'timm_mrap.training.launch', str(script)] if runner == 'timm' else \
        ['-m', f'timm_mrap.training.builtin.{kind}']
    if nproc == '1' and nnodes == 1:
        return [sys.executable, *target, *args]
    if kind != 'train':
        raise CliError(f'{kind} runs in one process; drop --nproc / --nnodes (NPROC / NNODES).')
    torchrun = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', f'--nnodes={nnodes}']
    if nnodes == 1:
        return [*torchrun, '--standalone', *target, *args]
    missing = [k for k in ('NODE_RANK', 'MASTER_ADDR') if not env.get(k)]
    if missing:
        raise CliError(f'--nnodes {nnodes} needs {" and ".join(missing)} in the environment on every node '
                       f'(NODE_RANK=0 on the node at MASTER_ADDR, 1..{nnodes - 1} on the others).')
    return [*torchrun, f'--node_rank={env["NODE_RANK"]}', f'--master_addr={env["MASTER_ADDR"]}',
            f'--master_port={env.get("MASTER_PORT", "29500")}', *target, *args]


def run_command(cmd: List[str], dry_run: bool, capture: bool = False) -> Tuple[int, str]:
    """Run ``cmd`` (stdout echoed, and returned when ``capture``); a working-directory ``timm/`` cannot shadow."""
    print(shlex.join(cmd), file=sys.stdout if dry_run else sys.stderr, flush=True)
    if dry_run:
        return 0, ''
    env = dict(os.environ, PYTHONSAFEPATH='1')  # Python >= 3.11: `python -m` does not put the cwd on sys.path
    if not capture:
        return subprocess.run(cmd, env=env).returncode, ''
    lines = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    return proc.returncode, ''.join(lines)


def checkpoint_args(model_name: str, checkpoint: str, work_dir: str, num_classes: Optional[int] = None,
                    model_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[str, List[str], str]:
    """Any supported checkpoint, checked as the built-in validator does, as (model argument, extra validate.py flags,
    checkpoint kind). A reference checkpoint is converted into ``work_dir``, with the mean / std of its ``data_bn``."""
    from ..checkpoint import save_hub_folder
    model, ckpt = model_from_checkpoint(model_name, checkpoint, num_classes, **(model_kwargs or {}))
    if ckpt.kind == 'hub-folder':
        return f'local-dir:{checkpoint}', ['--pretrained'], ckpt.kind
    if not ckpt.is_reference:
        return model_name, ['--checkpoint', checkpoint] + (
            ['--num-classes', str(model.num_classes)] if num_classes is None else []), ckpt.kind
    out, cfg = Path(work_dir) / 'converted', model.pretrained_cfg
    save_hub_folder(model, out, data_config={'mean': cfg['mean'], 'std': cfg['std']})
    log(f'converted reference checkpoint {checkpoint} -> {out} (mean {tuple(round(v, 4) for v in cfg["mean"])}, '
        f'std {tuple(round(v, 4) for v in cfg["std"])})')
    return model_name, ['--checkpoint', str(out / 'model.safetensors'), '--num-classes', str(model.num_classes),
                        '--mean', *map(str, cfg['mean']), '--std', *map(str, cfg['std'])], 'reference'
