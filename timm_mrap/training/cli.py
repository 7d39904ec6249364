""" The logic behind ``train.sh`` and ``validate.sh``: pick timm's scripts or the built-in fallback, and run them

``python -m timm_mrap.training.cli train``                          the demo (digits, under 3 min on 2 CPU cores)
``python -m timm_mrap.training.cli train MODEL DATA_DIR [flags...]``  training; flags are timm train.py's
``python -m timm_mrap.training.cli validate MODEL DATA_DIR [--checkpoint F | --pretrained] [flags...]``

Runner: timm's own ``train.py`` / ``validate.py`` through :mod:`timm_mrap.training.launch` when they can be found
(``TIMM_SCRIPTS_DIR``, the cache, a download), else the built-in ``timm_mrap.training.builtin.train`` / ``.validate``,
which take the same flags and write the same output layout. Options of this layer (anywhere in the arguments):

  --nproc N       processes per node (env NPROC; ``gpu`` = one per GPU); > 1 runs under torchrun
  --nnodes N      nodes (env NNODES); > 1 also needs NODE_RANK and MASTER_ADDR (MASTER_PORT, default 29500)
  --runner R      auto (default, env TIMM_MRAP_RUNNER), timm (fail if the scripts cannot be found), builtin
  --recipe NAME   a packaged recipe (rein100_paper, stanford_dogs_paper, mobilenet_mrap_modern, digits_demo) or a
                  YAML file, passed on as timm's --config
  --dry-run       print the commands instead of running them
"""
import contextlib
import csv
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import CliError, InputError

__all__ = [
    'CliError', 'LayerOptions', 'split_layer_options', 'model_kwargs_of', 'check_data_dir', 'resolve_runner',
    'build_command', 'detect_checkpoint_kind', 'prepare_checkpoint', 'parse_result', 'write_results', 'train',
    'validate', 'demo',
    'main',
]

def _log(msg: str) -> None:
    print(f'[timm_mrap] {msg}', file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------ arguments

class LayerOptions(NamedTuple):
    nproc: str
    nnodes: int
    runner: str
    recipe: Optional[str]
    dry_run: bool


def split_layer_options(argv: Sequence[str]) -> Tuple[LayerOptions, List[str]]:
    """Take this layer's options (``--nproc``, ``--nnodes``, ``--runner``, ``--recipe``, ``--dry-run``) out of
    ``argv``; everything else is left, in order, for timm's script."""
    values = {'--nproc': os.environ.get('NPROC', '1'), '--nnodes': os.environ.get('NNODES', '1'),
              '--runner': os.environ.get('TIMM_MRAP_RUNNER', 'auto'), '--recipe': None}
    dry_run, rest, args = False, [], list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition('=')
        if arg == '--dry-run':
            dry_run = True
        elif name in values:
            if not eq:
                if not args:
                    raise CliError(f'{name} needs a value.')
                value = args.pop(0)
            values[name] = value
        else:
            rest.append(arg)
    nproc = values['--nproc']
    if nproc != 'gpu' and not (nproc.isdigit() and int(nproc) >= 1):
        raise CliError(f'--nproc / NPROC must be a positive integer or "gpu", not {nproc!r}.')
    if not (values['--nnodes'].isdigit() and int(values['--nnodes']) >= 1):
        raise CliError(f'--nnodes / NNODES must be a positive integer, not {values["--nnodes"]!r}.')
    if values['--runner'] not in ('auto', 'timm', 'builtin'):
        raise CliError(f'--runner / TIMM_MRAP_RUNNER must be auto, timm or builtin, not {values["--runner"]!r}.')
    return LayerOptions(nproc, int(values['--nnodes']), values['--runner'], values['--recipe'], dry_run), rest


def _flag_value(args: Sequence[str], *names: str) -> Optional[str]:
    """Last value given for a flag (``--x v`` or ``--x=v``), or None."""
    found = None
    for i, arg in enumerate(args):
        name, eq, value = arg.partition('=')
        if name in names:
            found = value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return found


def model_kwargs_of(args: Sequence[str]) -> Dict[str, Any]:
    """The ``--model-kwargs k=v ...`` of timm's command line as a dict (values parsed as timm's ``ParseKwargs``)."""
    import argparse
    from timm.utils import ParseKwargs
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    values: List[str] = []
    for i, arg in enumerate(args):
        if arg == '--model-kwargs':
            values = ['--model-kwargs']
            for value in args[i + 1:]:
                if value.startswith('-'):
                    break
                values.append(value)
    return vars(parser.parse_args(values))['model_kwargs'] if values else {}


def _pop_flag(args: List[str], *names: str) -> Optional[str]:
    """Remove a flag and its value from ``args``; return the (last) value."""
    found, i = None, 0
    while i < len(args):
        name, eq, value = args[i].partition('=')
        if name in names:
            if eq:
                found = value
                del args[i]
            else:
                if i + 1 >= len(args):
                    raise CliError(f'{name} needs a value.')
                found = args[i + 1]
                del args[i:i + 2]
        else:
            i += 1
    return found


def _model_and_data(args: List[str], usage: str) -> Tuple[str, str, List[str]]:
    """``MODEL DATA_DIR`` from the first two positional arguments (or ``--model`` / ``--data-dir``)."""
    positionals = []
    while args and not args[0].startswith('-') and len(positionals) < 2:
        positionals.append(args.pop(0))
    model = positionals[0] if positionals else _flag_value(args, '--model')
    data_dir = positionals[1] if len(positionals) > 1 else _flag_value(args, '--data-dir')
    if not model or not data_dir:
        raise CliError(f'MODEL and DATA_DIR are required.\n{usage}')
    if args and not args[0].startswith('-'):
        raise CliError(f'Unexpected argument {args[0]!r} after MODEL DATA_DIR; timm flags start with --.\n{usage}')
    rest = list(args)
    if positionals:
        rest = ['--model', model] + rest
    if len(positionals) > 1:
        rest = ['--data-dir', data_dir] + rest
    return model, data_dir, rest


def _read_config(path: Optional[str]) -> Dict[str, Any]:
    if not path:
        return {}
    import yaml
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f'Could not read the config {path}: {e}') from e
    if not isinstance(cfg, dict):
        raise CliError(f'{path} is not a mapping of flag names to values (a timm --config YAML file).')
    return cfg


def _recipe_args(opts: LayerOptions, args: List[str]) -> List[str]:
    if not opts.recipe:
        return args
    from .recipes import recipe_path
    try:
        return ['--config', str(recipe_path(opts.recipe))] + args
    except FileNotFoundError as e:
        raise CliError(str(e)) from e


# ----------------------------------------------------------------------------------------------------- data checks

@contextlib.contextmanager
def _as_cli_error() -> Iterator[None]:
    """The shared input checks raise ``InputError``; this layer's callers catch ``CliError`` (a subclass of it)."""
    try:
        yield
    except InputError as e:
        if isinstance(e, CliError):
            raise
        raise CliError(str(e)) from e


def check_data_dir(data_dir: str, splits: Sequence[Tuple[str, str]], dataset: Optional[str]) -> List[str]:
    """The class folders of the first split, after the checks the built-in runners make too (``input_checks``)."""
    from .input_checks import check_data_dir as check
    with _as_cli_error():
        return check(data_dir, splits, dataset)


def _check_num_classes(args: List[str], cfg: Dict[str, Any], names: List[str], where: str) -> List[str]:
    """Add ``--num-classes`` from the class folders when neither the flags nor the config set it; otherwise the
    built-in trainer's rule (``input_checks.folder_num_classes``)."""
    from .input_checks import folder_num_classes
    given = _flag_value(args, '--num-classes') or cfg.get('num_classes')
    with _as_cli_error():
        found = folder_num_classes(int(given) if given is not None else None, names, where)
    if given is None and found:
        _log(f'--num-classes {found} (from the class folders)')
        return args + ['--num-classes', str(found)]
    return args


def _device_args(args: List[str]) -> List[str]:
    """timm's scripts default to --device cuda; add --device cpu on a machine without a GPU."""
    if _flag_value(args, '--device') is not None:
        return args
    import torch
    if torch.cuda.is_available():
        return args
    _log('no CUDA device: adding --device cpu')
    return args + ['--device', 'cpu']


# --------------------------------------------------------------------------------------------------------- runners

def resolve_runner(kind: str, runner: str) -> Tuple[str, Optional[Path]]:
    """``('timm', script path)`` when timm's ``<kind>.py`` can be found (or downloaded), else ``('builtin', None)``.

    Args:
        kind: ``train`` or ``validate``.
        runner: ``auto``, ``timm`` (an error when the script cannot be had) or ``builtin``.
    """
    if runner == 'builtin':
        return 'builtin', None
    from .scripts import ScriptNotFoundError, find_script
    try:
        return 'timm', find_script(f'{kind}.py')
    except ScriptNotFoundError as e:
        if runner == 'timm':
            raise CliError(f'--runner timm: {e}') from e
        _log(f"timm's {kind}.py is not available ({str(e).splitlines()[0]}); using the built-in "
             f'timm_mrap.training.builtin.{kind}. For timm\'s own script set TIMM_SCRIPTS_DIR to a timm checkout.')
        return 'builtin', None


def build_command(
        kind: str,
        runner: str,
        script: Optional[Path],
        args: Sequence[str],
        nproc: str = '1',
        nnodes: int = 1,
        env: Optional[Dict[str, str]] = None,
) -> List[str]:
    """The command line: ``python -m <launcher | built-in> ...``, under torchrun for several processes or nodes."""
    env = os.environ if env is None else env
    target = ['-m', 'timm_mrap.training.launch', str(script)] if runner == 'timm' else \
        ['-m', f'timm_mrap.training.builtin.{kind}']
    if nproc == '1' and nnodes == 1:
        return [sys.executable, *target, *args]
    if kind != 'train':
        raise CliError(f'{kind} runs in one process; drop --nproc / --nnodes (NPROC / NNODES).')
    torchrun = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', f'--nnodes={nnodes}']
    if nnodes > 1:
        missing = [k for k in ('NODE_RANK', 'MASTER_ADDR') if not env.get(k)]
        if missing:
            raise CliError(f'--nnodes {nnodes} needs {" and ".join(missing)} in the environment on every node '
                           f'(NODE_RANK=0 on the node at MASTER_ADDR, 1..{nnodes - 1} on the others).')
        torchrun += [f'--node_rank={env["NODE_RANK"]}', f'--master_addr={env["MASTER_ADDR"]}',
                     f'--master_port={env.get("MASTER_PORT", "29500")}']
    else:
        torchrun += ['--standalone']
    return [*torchrun, *target, *args]


def _run(cmd: List[str], dry_run: bool, capture: bool = False) -> Tuple[int, str]:
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


# ------------------------------------------------------------------------------------------------------ checkpoints

def detect_checkpoint_kind(path: str) -> str:
    """``hub-folder``, ``reference`` (authors' layout, ``backbone.*`` keys), ``timm`` (a train.py checkpoint or a
    timm state dict, ``.pth`` / ``.pth.tar`` / ``.safetensors``).

    Raises:
        CliError: missing or unreadable file.
    """
    from ..checkpoint import read_checkpoint, reraise_as
    with reraise_as(CliError):
        checkpoint = read_checkpoint(path)
    return 'reference' if checkpoint.is_reference else checkpoint.kind


def prepare_checkpoint(
        model_name: str,
        checkpoint: str,
        work_dir: str,
        num_classes: Optional[int] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
) -> Tuple[str, List[str], str]:
    """Turn any supported checkpoint into arguments for timm's validate.py, after the built-in validator's checks.

    Reference checkpoints are converted (``timm_mrap.convert``) into ``work_dir`` and validated with the mean / std
    folded from their ``data_bn``.

    Returns:
        (model argument, extra validate flags, checkpoint kind).
    """
    import timm_mrap  # noqa: F401  (registers the models)
    from ..checkpoint import save_hub_folder
    from .input_checks import model_from_checkpoint
    with _as_cli_error():
        model, ckpt = model_from_checkpoint(model_name, checkpoint, num_classes, **(model_kwargs or {}))
    if ckpt.kind == 'hub-folder':
        return f'local-dir:{checkpoint}', ['--pretrained'], ckpt.kind
    if ckpt.is_reference:
        out = Path(work_dir) / 'converted'
        cfg = model.pretrained_cfg
        save_hub_folder(model, out, data_config={'mean': cfg['mean'], 'std': cfg['std']})
        _log(f'converted reference checkpoint {checkpoint} -> {out} (mean {tuple(round(v, 4) for v in cfg["mean"])}, '
             f'std {tuple(round(v, 4) for v in cfg["std"])})')
        extra = ['--checkpoint', str(out / 'model.safetensors'), '--num-classes', str(model.num_classes),
                 '--mean', *map(str, cfg['mean']), '--std', *map(str, cfg['std'])]
        return model_name, extra, 'reference'
    extra = ['--checkpoint', checkpoint]
    if num_classes is None:
        extra += ['--num-classes', str(model.num_classes)]
    return model_name, extra, ckpt.kind


# ---------------------------------------------------------------------------------------------------------- results

def parse_result(stdout: str) -> Optional[Dict[str, Any]]:
    """The result dict that timm's validate.py prints after a ``--result`` line, or None."""
    idx = stdout.rfind('--result')
    if idx < 0:
        return None
    try:
        result, _ = json.JSONDecoder().raw_decode(stdout[idx + len('--result'):].lstrip())
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


def write_results(result: Dict[str, Any], prefix: Path) -> Tuple[Path, Path]:
    """Write ``<prefix>.json`` and ``<prefix>.csv`` (one header line, one row)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = prefix.with_name(prefix.name + '.json'), prefix.with_name(prefix.name + '.csv')
    json_path.write_text(json.dumps(result, indent=2) + '\n')
    with open(csv_path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(result))
        writer.writeheader()
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in result.items()})
    return json_path, csv_path


# ---------------------------------------------------------------------------------------------------------- commands

TRAIN_USAGE = 'usage: train.sh [MODEL DATA_DIR [--recipe NAME] [--nproc N] [--nnodes N] [timm train.py flags...]]'
VALIDATE_USAGE = ('usage: validate.sh MODEL DATA_DIR [--checkpoint F | --pretrained] [--results-file PREFIX] '
                  '[timm validate.py flags...]')


def train(argv: Sequence[str]) -> int:
    """``train.sh MODEL DATA_DIR [flags...]``: return the trainer's exit status."""
    opts, args = split_layer_options(argv)
    _, data_dir, args = _model_and_data(args, TRAIN_USAGE)
    args = _recipe_args(opts, args)
    cfg = _read_config(_flag_value(args, '--config', '-c'))
    train_split = _flag_value(args, '--train-split') or cfg.get('train_split') or 'train'
    val_split = _flag_value(args, '--val-split') or cfg.get('val_split') or 'validation'
    names = check_data_dir(data_dir, [(train_split, '--train-split'), (val_split, '--val-split')],
                           _flag_value(args, '--dataset', '-d') or cfg.get('dataset'))
    args = _check_num_classes(args, cfg, names, f'{data_dir} (split {train_split!r})')
    args = _device_args(args)
    runner, script = resolve_runner('train', opts.runner)
    return _run(build_command('train', runner, script, args, opts.nproc, opts.nnodes), opts.dry_run)[0]


def validate(argv: Sequence[str]) -> Tuple[int, Optional[Dict[str, Any]]]:
    """``validate.sh MODEL DATA_DIR [--checkpoint F | --pretrained] [flags...]``: exit status and result dict."""
    opts, args = split_layer_options(argv)
    if opts.recipe:
        raise CliError('--recipe is for training; validate.sh takes --img-size / --crop-pct etc. directly.')
    model, data_dir, args = _model_and_data(args, VALIDATE_USAGE)
    checkpoint = _pop_flag(args, '--checkpoint')
    results = _pop_flag(args, '--results-file')
    _pop_flag(args, '--results-format')
    if checkpoint is None and '--pretrained' not in args:
        raise CliError(f'Pass --checkpoint FILE (timm training checkpoint, .safetensors, reference checkpoint or '
                       f'Hub-format folder) or --pretrained.\n{VALIDATE_USAGE}')
    split = _flag_value(args, '--split') or 'validation'
    found = len(check_data_dir(data_dir, [(split, '--split')], _flag_value(args, '--dataset', '-d')))
    num_classes = _flag_value(args, '--num-classes')
    num_classes = int(num_classes) if num_classes is not None else None
    prefix = Path(re.sub(r'\.(json|csv)$', '', results)) if results else \
        Path('output') / 'validate' / f'{model.replace("/", "_")}-{Path(checkpoint or "pretrained").stem}'
    with tempfile.TemporaryDirectory(prefix='timm_mrap_validate_') as work_dir:
        kind = 'pretrained'
        if checkpoint is not None:
            model_arg, extra, kind = prepare_checkpoint(model, checkpoint, work_dir, num_classes,
                                                        model_kwargs_of(args))
            _pop_flag(args, '--model')
            args = ['--model', model_arg] + args + extra
        if _flag_value(args, '--num-classes') is None and found and checkpoint is not None:
            args += ['--num-classes', str(found)]
        classes = _flag_value(args, '--num-classes')
        if found and classes is not None and int(classes) < found and _flag_value(args, '--class-map') is None:
            raise CliError(f'{data_dir} has {found} class folders but the model classifies {classes} classes; '
                           f'validate on the data set the checkpoint was trained for.')
        args = _device_args(args)
        runner, script = resolve_runner('validate', opts.runner)
        rc, stdout = _run(build_command('validate', runner, script, args, opts.nproc, opts.nnodes), opts.dry_run,
                          capture=True)
    if opts.dry_run or rc != 0:
        return rc, None
    result = parse_result(stdout)
    if result is None:
        raise CliError('The validator exited without printing a "--result" JSON block; see its output above.')
    result = {**result, 'checkpoint': checkpoint or 'pretrained', 'checkpoint_kind': kind, 'data_dir': data_dir,
              'runner': runner}
    json_path, csv_path = write_results(result, prefix)
    _log(f'results: {json_path} and {csv_path}')
    return 0, result


def _device_flag(args: Sequence[str]) -> List[str]:
    """``['--device', X]`` when ``args`` set one (``--device X`` or ``--device=X``), else ``[]``."""
    for i, a in enumerate(args):
        if a == '--device' and i + 1 < len(args):
            return ['--device', args[i + 1]]
        if a.startswith('--device='):
            return [a]
    return []


def demo(argv: Sequence[str]) -> int:
    """``train.sh`` with no arguments: digits as an ImageFolder, train, validate on the held-out split, top-1.

    The model, image size and schedule come from the ``digits_demo`` recipe. The last line printed says the top-1
    and where the run (checkpoints, ``summary.csv``) and the validation results are.
    """
    from .datasets import write_digits_imagefolder
    from .recipes import recipe_path
    opts, extra = split_layer_options(argv)  # extra: timm flags that override the recipe, e.g. --epochs 1 --device cuda
    start = time.time()
    recipe = recipe_path('digits_demo')
    cfg = _read_config(str(recipe))
    model, img_size = cfg['model'], str(cfg['img_size'])
    root = Path(os.environ.get('TIMM_MRAP_DEMO_DIR', 'output/demo'))
    data = root / 'digits'
    counts = write_digits_imagefolder(str(data))
    _log(f"demo: scikit-learn's digits in {data} ({counts['train']} train / {counts['validation']} held-out images); "
         f"training {model} from scratch, {cfg['epochs']} epochs at {img_size} px ({recipe.name})")
    experiment = f'digits-{model}-{time.strftime("%Y%m%d-%H%M%S")}'
    run_dir = root / 'train' / experiment
    # A CPU demo often shares its cores: OpenMP threads that spin while waiting slowed a step 2.3x when another job
    # held one of 2 cores; sleeping waits cost little when the machine is idle.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    layer = [f'--runner={opts.runner}', f'--nproc={opts.nproc}'] + (['--dry-run'] if opts.dry_run else [])
    rc = train([model, str(data), '--config', str(recipe), '--output', str(root / 'train'), '--experiment', experiment,
                *extra, *layer])
    if rc != 0:
        return rc
    checkpoint = run_dir / 'model_best.pth.tar'
    validate_args = [model, str(data), '--checkpoint', str(checkpoint), '--img-size', img_size, '--results-file',
                     str(root / experiment), '--workers', str(cfg.get('workers', 2)), *_device_flag(extra)]
    if opts.dry_run:
        print(shlex.join(['validate.sh', *validate_args]))
        return 0
    rc, result = validate([*validate_args, f'--runner={opts.runner}'])
    if rc != 0 or result is None:
        return rc or 1
    minutes, seconds = divmod(int(time.time() - start), 60)
    print(f'Demo done: {model} top-1 {float(result["top1"]):.1f}% on the {counts["validation"]} held-out digits, '
          f'{minutes} min {seconds} s in all. Run: {run_dir}/ (model_best.pth.tar, summary.csv); results: '
          f'{root / experiment}.json and .csv', flush=True)
    return 0


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
        if command == 'train':
            rest = split_layer_options(args)[1]
            return train(args) if rest and not rest[0].startswith('-') else demo(args)
        return validate(args)[0]
    except CliError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
