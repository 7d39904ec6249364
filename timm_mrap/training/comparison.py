""" Same-recipe comparison of attentions: one backbone, every ``attn`` choice, several seeds

Each (attention, seed) run goes through ``train.sh``'s layer (:func:`.commands.train_command`), its best checkpoint
through ``validate.sh``'s with the run's own settings; params and GMACs come from :mod:`timm_mrap.complexity`, the
latency ratio from :mod:`timm_mrap.benchmark`. A rerun skips finished runs and resumes interrupted ones. The output
folder is described in docs/training.md; the reports are :mod:`.compare_report`'s.
"""
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..checkpoint import Checkpoint, read_checkpoint
from ..errors import CheckpointError, CompareError, InputError
from .commands import parse_command_line, read_timm_flags, train_command, validate_command
from .input_checks import check_data_dir
from .recipes import read_config, recipe_path

__all__ = [
    'CompareError', 'CompareConfig', 'Run', 'Plan', 'make_plan', 'run_state', 'measure_latency', 'run_compare',
]

# flags the tool sets per run or replaces with its own options
_RESERVED = {
    '--seed': 'the seeds are --seeds S [S ...]', '--experiment': 'each run is OUTPUT/runs/<attn>-seed<seed>',
    '--output': 'the grid writes into --output', '--resume': 'an interrupted run is resumed by rerunning the command',
    '--data-dir': 'DATA_DIR is the first argument', '--config': 'pass the recipe as --recipe NAME|FILE',
    '-c': 'pass the recipe as --recipe NAME|FILE', '--dry-run': 'the grid has no dry run',
    '--model': 'one model per grid, given as --model',
}
# train.py args (saved in the checkpoint) -> the validate.py flag that evaluates as the run did
_VALIDATE_FLAGS = (
    ('img_size', '--img-size'), ('input_size', '--input-size'), ('crop_pct', '--crop-pct'),
    ('interpolation', '--interpolation'), ('mean', '--mean'), ('std', '--std'), ('val_split', '--split'),
    ('dataset', '--dataset'), ('class_map', '--class-map'), ('workers', '--workers'), ('device', '--device'),
    ('in_chans', '--in-chans'), ('gp', '--gp'), ('amp', '--amp'), ('channels_last', '--channels-last'),
    ('model_ema', '--use-ema'))


@dataclass
class CompareConfig:
    """The grid: ``model`` with every attention of ``attns``, trained once per seed, with one recipe and flags."""
    data_dir: str
    model: Optional[str] = None  # default: the recipe's model
    attns: Sequence[str] = ('none', 'se', 'eca', 'cbam', 'mrap')
    seeds: Sequence[int] = (0, 1, 2)
    recipe: Optional[str] = None
    epochs: Optional[int] = None  # default: the recipe's (timm's default 300 without one)
    output: str = 'output/compare'
    train_args: Sequence[str] = ()  # timm train.py flags and train.sh's options (--nproc, --nnodes, --runner)
    overwrite: bool = False
    latency_batch: int = 1


@dataclass(frozen=True)
class Run:
    """One training run of the grid."""
    attn: str
    seed: int

    @property
    def name(self) -> str:
        return f'{self.attn}-seed{self.seed}'


@dataclass
class Plan:
    """The checked grid: everything resolved before the first run starts."""
    cfg: CompareConfig
    model: str
    recipe_path: Optional[Path]
    epochs: int
    num_classes: int
    img_size: int
    device: str
    runner: str
    model_kwargs: Dict[str, Any]  # the recipe's and --model-kwargs, passed last per run (timm keeps the last)
    complexity: Dict[str, Tuple[int, float]] = field(default_factory=dict)  # attn -> (params, GMACs)

    @property
    def runs(self) -> List[Run]:
        """Seed-major order: every attention of the first seed first, so a stopped grid already compares them."""
        return [Run(a, s) for s in self.cfg.seeds for a in self.cfg.attns]

    def run_dir(self, run: Run) -> Path:
        return Path(self.cfg.output) / 'runs' / run.name

    def manifest(self) -> Dict[str, Any]:
        """What makes two calls the same grid (attentions and seeds may grow between calls)."""
        return dict(model=self.model, recipe=self.cfg.recipe, epochs=self.epochs,
                    data_dir=str(Path(self.cfg.data_dir).resolve()), train_args=list(self.cfg.train_args))


def _check_args(cfg: CompareConfig) -> None:
    from timm_mrap.layers import ATTN_CHOICES
    unknown = [a for a in cfg.attns if a not in ATTN_CHOICES]
    if unknown:
        raise CompareError(f'Unknown attention {unknown}; choose from {" ".join(ATTN_CHOICES)}.')
    for flag, values, what in (('--attn', cfg.attns, 'attention'), ('--seeds', cfg.seeds, 'seed')):
        if not values or len(set(values)) != len(values):
            raise CompareError(f'{flag} needs each {what} once, got {list(values)}.')
    for flag, value in (('--epochs', cfg.epochs), ('--latency-batch', cfg.latency_batch)):
        if value is not None and value < 1:
            raise CompareError(f'{flag} must be >= 1, not {value}.')
    for arg in cfg.train_args:
        name = arg.split('=')[0]
        if name in _RESERVED:
            raise CompareError(f'{name} is set by the comparison: {_RESERVED[name]}.')
    attn_kwarg = read_timm_flags(cfg.train_args).model_kwargs.get('attn')
    if attn_kwarg is not None:
        raise CompareError(f'--model-kwargs attn={attn_kwarg}: the attention is set per run; list it in --attn.')


def _complexity(plan: Plan) -> None:
    """Params and GMACs of every attention (which also checks that the model takes ``attn=``)."""
    import timm
    import timm_mrap  # noqa: F401
    from timm_mrap.complexity import count_macs, count_params
    if not timm.is_model(plan.model):
        raise CompareError(f'Unknown model {plan.model!r}; the grid takes a model with attn= choices: '
                           f'{" ".join(timm.list_models("*_mrap"))}.')
    for attn in plan.cfg.attns:
        try:
            model = timm.create_model(plan.model, num_classes=plan.num_classes, **plan.model_kwargs, attn=attn)
        except (TypeError, ValueError) as e:
            raise CompareError(f'{plan.model} with attn={attn!r}: {e}. The grid takes a model with attn= choices: '
                               f'{" ".join(timm.list_models("*_mrap"))}.') from e
        plan.complexity[attn] = count_params(model), count_macs(model, (3, plan.img_size, plan.img_size)) / 1e9


def _check_output(plan: Plan) -> None:
    """An output folder of another grid (model, recipe, epochs, data, flags) is only replaced with ``overwrite``."""
    out = Path(plan.cfg.output)
    manifest_path = out / 'compare.json'
    if plan.cfg.overwrite:
        return
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        new = plan.manifest()
        differ = [f'{k}: {old.get(k)!r} there, {new[k]!r} now' for k in new if old.get(k) != new[k]]
        if differ:
            raise CompareError(f'{out} holds the results of another grid ({"; ".join(differ)}); pass --overwrite to '
                               f'replace them or choose another --output.')
    elif out.is_dir() and any(out.iterdir()):
        raise CompareError(f'{out} is not empty and holds no compare.json; choose another --output (or pass '
                           f'--overwrite to write the grid into it).')


def _clear_output(out: Path) -> None:
    """Remove what an earlier grid wrote into ``out`` (``--overwrite``); other files stay."""
    for name in ('runs', 'latency'):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ('compare.json', 'results.csv', 'summary.md', 'top1_vs_latency.png'):
        (out / name).unlink(missing_ok=True)


def make_plan(cfg: CompareConfig) -> Plan:
    """Check every input and resolve the grid, before anything is trained.

    Raises:
        CompareError: an unknown attention or model, a missing data folder or split, reserved flags, or an output
            folder holding another grid (without ``overwrite``).
    """
    _check_args(cfg)
    try:
        layer, flags = parse_command_line(cfg.train_args)
        path = recipe_path(cfg.recipe) if cfg.recipe else None
        recipe = read_config(str(path)) if path else {}
        timm_flags = read_timm_flags([*(['--config', str(path)] if path else []), *flags])
        found = len(check_data_dir(cfg.data_dir, [(timm_flags.train_split, '--train-split'),
                                                  (timm_flags.val_split, '--val-split')], timm_flags.dataset))
    except InputError as e:
        raise CompareError(str(e)) from e
    model = cfg.model or recipe.get('model')
    if not model:
        raise CompareError('Pass --model (e.g. mobilenetv3_mrap); the recipe names none.')
    num_classes = timm_flags.num_classes or found
    input_size = recipe.get('input_size')
    img_size = int(timm_flags.img_size or (input_size[-1] if input_size else 224))
    import torch
    device = timm_flags.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    plan = Plan(cfg, model, path, int(cfg.epochs or recipe.get('epochs') or 300), int(num_classes), img_size, device,
                layer.runner, {**(recipe.get('model_kwargs') or {}), **timm_flags.model_kwargs})
    _complexity(plan)
    _check_output(plan)
    return plan


def _kwarg_strings(kwargs: Dict[str, Any]) -> List[str]:
    """``k=v`` tokens that timm's ``ParseKwargs`` reads back as the same values."""
    return [f'{k}={v}' if isinstance(v, str) else f'{k}={v!r}' for k, v in kwargs.items()]


def _read_run_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint this grid's trainer wrote into its own run folder."""
    try:
        return read_checkpoint(path)
    except (CheckpointError, FileNotFoundError) as e:
        raise CompareError(f'{e} Delete its run folder {path.parent} to train that run again.') from e


def run_state(run_dir: Path, epochs: int) -> str:
    """``done`` (``run.json`` written), ``trained`` (all epochs in ``last.pth.tar``, not validated), ``resume``
    (``last.pth.tar`` of an earlier epoch) or ``new``."""
    if (run_dir / 'run.json').is_file():
        return 'done'
    last = run_dir / 'last.pth.tar'
    if last.is_file():
        return 'trained' if (_read_run_checkpoint(last).epoch or 0) + 1 >= epochs else 'resume'
    return 'new'


def _train(plan: Plan, run: Run, resume: bool) -> None:
    run_dir = plan.run_dir(run)
    recipe = ['--recipe', str(plan.recipe_path)] if plan.recipe_path else []
    rc = train_command([
        plan.model, plan.cfg.data_dir, *recipe, *plan.cfg.train_args, '--epochs', str(plan.epochs), '--seed',
        str(run.seed), '--model-kwargs', *_kwarg_strings({**plan.model_kwargs, 'attn': run.attn}), '--output',
        str(run_dir.parent), '--experiment', run.name, *(['--resume', str(run_dir / 'last.pth.tar')] if resume else []),
    ])
    if rc != 0:
        raise CompareError(f'Training {run.name} failed (exit status {rc}; its output is above). Rerun the same '
                           f'command to resume it from {run_dir / "last.pth.tar"}.')


def _validate_args(args: Dict[str, Any]) -> List[str]:
    """validate.py flags that evaluate as the training run did (from the checkpoint's saved train.py args)."""
    out = []
    for key, flag in _VALIDATE_FLAGS:
        value = args.get(key)
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)] if value else []
        elif value not in (None, '') and value is not False:
            out += [flag, str(value)]
    if args.get('amp') and args.get('amp_dtype'):
        out += ['--amp-dtype', str(args['amp_dtype'])]
    out += ['-b', str(args.get('validation_batch_size') or args.get('batch_size') or 64)]
    if args.get('model_kwargs'):
        out += ['--model-kwargs', *_kwarg_strings(args['model_kwargs'])]
    return out


def _validate(plan: Plan, run: Run) -> Dict[str, Any]:
    """Validate ``model_best.pth.tar``; the row of ``results.csv``."""
    run_dir = plan.run_dir(run)
    best_path = run_dir / 'model_best.pth.tar'
    if not best_path.is_file():
        raise CompareError(f'{run_dir} has no model_best.pth.tar; delete the folder to train {run.name} again.')
    best = _read_run_checkpoint(best_path)
    last = _read_run_checkpoint(run_dir / 'last.pth.tar')
    train_args = best.train_args
    argv = [plan.model, plan.cfg.data_dir, '--checkpoint', str(best_path), '--results-file',
            str(run_dir / 'validate'), '--runner', plan.runner, '--nproc', '1', *_validate_args(train_args)]
    rc, result = validate_command(argv)
    if rc != 0 or result is None:
        raise CompareError(f'Validating {best_path} failed (exit status {rc}; its output is above).')
    params, gmacs = plan.complexity[run.attn]
    return dict(attn=run.attn, seed=run.seed, top1=float(result['top1']), top5=float(result['top5']),
                epochs=int(last.epoch) + 1, best_epoch=int(best.epoch), params=params, gmacs=gmacs,
                run_dir=str(run_dir))


def _do_run(plan: Plan, run: Run, state: str) -> Dict[str, Any]:
    """Train (or resume) and validate one run; write its ``run.json``. Wall time adds up over interrupted calls.
    An input error of the train or validate layer is raised as a :class:`CompareError`."""
    run_dir = plan.run_dir(run)
    time_file = run_dir / 'compare_wall_s.txt'
    start = time.time()
    try:
        if state in ('new', 'resume'):
            _train(plan, run, resume=state == 'resume')
        row = _validate(plan, run)
    except InputError as e:
        raise CompareError(str(e)) from e
    finally:
        spent = float(time_file.read_text()) if time_file.is_file() else 0.
        run_dir.mkdir(parents=True, exist_ok=True)
        time_file.write_text(f'{spent + time.time() - start:.1f}\n')
    row['wall_s'] = round(float(time_file.read_text()), 1)
    (run_dir / 'run.json').write_text(json.dumps(row, indent=2) + '\n')
    return row


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours} h {minutes} min' if hours else f'{minutes} min {seconds} s'


def measure_latency(plan: Plan, log: Callable[[str], None]) -> Dict[str, Dict[str, float]]:
    """Eager fp32 inference time of every attention relative to ``attn='none'``, by ``python -m timm_mrap.benchmark``
    in a fresh process (``OMP_WAIT_POLICY=PASSIVE`` unless set) on the training device, into ``OUTPUT/latency/``.

    Returns:
        ``{attn: {'relative': ..., 'median_ms': ...}}``.
    """
    attns = ['none'] + [a for a in plan.cfg.attns if a != 'none']
    out = Path(plan.cfg.output) / 'latency'
    cmd = [sys.executable, '-m', 'timm_mrap.benchmark', '--variants', *[f'{plan.model}:{a}' for a in attns],
           '--device', plan.device, '--settings', f'fp32:eager:infer:{plan.cfg.latency_batch}',
           '--img-size', str(plan.img_size), '--num-classes', str(plan.num_classes), '--warmup', '3', '--repeats', '9',
           '--iters', '10' if plan.device.startswith('cuda') else '1', '--output', str(out), '--overwrite', '--no-plot']
    log(shlex.join(cmd))
    env = {'OMP_WAIT_POLICY': 'PASSIVE', **os.environ, 'PYTHONSAFEPATH': '1'}  # as train.sh: no cwd timm/ shadowing
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout.splitlines():
        log(line)
    if proc.returncode != 0:
        raise CompareError(f'The latency benchmark failed (exit status {proc.returncode}; its output is above). The '
                           f'runs are done: rerun the same command to measure it again.')
    with open(out / 'results.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    return {r['attn']: dict(relative=float(r['relative']), median_ms=float(r['median_ms'])) for r in rows}


def run_compare(cfg: CompareConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Check the inputs, train and validate every missing run, measure latency and write the reports.

    Returns:
        ``rows`` (one per run, in grid order), ``summary`` (one per attention), ``paths`` of the written files,
        ``best`` (the attention with the highest mean top-1), ``trained`` / ``skipped`` counts and ``wall_s``.
    """
    from .compare_report import summarize_grid, write_reports
    start = time.time()
    plan = make_plan(cfg)
    out = Path(cfg.output)
    if cfg.overwrite:
        _clear_output(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'compare.json').write_text(json.dumps(plan.manifest(), indent=2) + '\n')
    runs = plan.runs
    states = {run: run_state(plan.run_dir(run), plan.epochs) for run in runs}
    todo = [run for run in runs if states[run] != 'done']
    log(f'[compare] {plan.model}: {len(runs)} runs ({len(cfg.attns)} attentions x {len(cfg.seeds)} seeds), '
        f'{len(runs) - len(todo)} already done, {len(todo)} to run; {plan.epochs} epochs each, output {out}/')
    rows, durations = {}, []
    for i, run in enumerate(runs, 1):
        if states[run] == 'done':
            rows[run] = json.loads((plan.run_dir(run) / 'run.json').read_text())
            continue
        left = len(todo) - len(durations) - 1
        eta = f', about {_duration(sum(durations) / len(durations) * (left + 1))} to go' if durations else ''
        what = {'new': 'training', 'resume': 'resuming from last.pth.tar', 'trained': 'validating'}[states[run]]
        log(f'[compare] run {i}/{len(runs)}: attn={run.attn} seed={run.seed}, {what} ({left} more after this'
            f'{eta})')
        t0 = time.time()
        rows[run] = _do_run(plan, run, states[run])
        durations.append(time.time() - t0)
        log(f'[compare] run {i}/{len(runs)} done: attn={run.attn} seed={run.seed} top-1 {rows[run]["top1"]:.2f}% '
            f'in {_duration(durations[-1])}')
    log(f'[compare] latency: eager fp32 inference, batch {cfg.latency_batch}, {plan.img_size} px on {plan.device}')
    latency = measure_latency(plan, log)
    ordered = [rows[run] for run in runs]
    summary = summarize_grid(ordered, cfg.attns, latency)
    paths = write_reports(plan, ordered, summary, log)
    best = max(summary, key=lambda s: s['top1_mean'])
    return dict(rows=ordered, summary=summary, paths=paths, best=best, trained=len(todo),
                skipped=len(runs) - len(todo), wall_s=time.time() - start)
