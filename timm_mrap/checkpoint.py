""" Checkpoints: read a file into a state dict plus what it is, and check that it fits a model

Files are read by timm's readers and cleaned by its ``clean_state_dict``; added here is what timm lacks: the rest of
a ``train.py`` checkpoint (``arch``, ``args``, ``epoch``), the authors' reference layouts, Hub folders, the fit report.
"""
import argparse
import contextlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Type, Union

import torch
from torch import nn

import timm
from timm.models import clean_state_dict, load_state_dict, save_for_hf
from timm.models._helpers import _torch_load

from .errors import CheckpointError

__all__ = [
    'Checkpoint', 'FitReport', 'read_checkpoint', 'is_reference_state_dict', 'classifier_classes',
    'checkpoint_num_classes', 'check_fit', 'load_model', 'reraise_as', 'save_hub_folder',
]

# timm's load_state_dict looks for these entries too, but returns only the weights: the rest of the file is kept here
_WEIGHTS_KEYS = ('state_dict', 'model', 'model_state_dict')  # model_state_dict: MRAP_Dogs.py
_EMA_KEYS = ('state_dict_ema', 'model_ema')
_HUB_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
PathLike = Union[str, Path]


@dataclass
class Checkpoint:
    """Weights read from a file or Hub folder, with what the file says about them."""
    path: Path
    kind: str  # 'timm', 'reference-mrap', 'reference-maf' or 'hub-folder'
    state_dict: Dict[str, torch.Tensor]
    weights_key: Optional[str] = None  # the entry the weights came from ('state_dict', 'state_dict_ema', ...)
    arch: Optional[str] = None  # train.py's 'arch', a Hub folder's 'architecture'
    train_args: Dict[str, Any] = field(default_factory=dict)  # train.py's 'args'
    epoch: Optional[int] = None
    config: Dict[str, Any] = field(default_factory=dict)  # a Hub folder's config.json

    @property
    def is_reference(self) -> bool:
        """Whether the weights are in an authors' reference layout (convert them with ``timm_mrap.convert``)."""
        return self.kind.startswith('reference')


def is_reference_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for the authors' MRAP / MAF layout: ``backbone.*`` units and a ``classifier.conv`` 1 x 1 conv head."""
    return 'classifier.conv.weight' in state_dict and any(k.startswith('backbone.') for k in state_dict)


def _load_file(path: Path) -> Any:
    try:
        if path.suffix == '.safetensors':
            return load_state_dict(str(path))
        return _torch_load(str(path))  # timm's weights_only reader, which keeps the whole file (arch, args, epoch)
    except Exception as e:  # the reader's own error, named; a file blocked by weights_only is not called incomplete
        cause = f'{type(e).__name__}: {(str(e).splitlines() or [""])[0][:300]}'
        fix = ('it holds Python objects besides tensors; save its state dict alone (model.state_dict())'
               if isinstance(e.__cause__, pickle.UnpicklingError) else
               'it is incomplete or not a PyTorch / safetensors checkpoint; copy or download it again')
        raise CheckpointError(f'Could not read checkpoint {path} ({cause}): {fix}.') from e


def _tensors_only(weights: Mapping[str, Any], path: Path) -> Dict[str, torch.Tensor]:
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f'{path}: entries {bad[:3]} are not tensors; not a state dict or a timm training '
                              f'checkpoint.')
    return clean_state_dict(dict(weights))


def _read_hub_folder(path: Path, use_ema: bool) -> Checkpoint:
    if use_ema:
        raise CheckpointError(f'{path} is a Hub folder, which holds one set of weights; drop --use-ema.')
    weights = next((path / name for name in _HUB_WEIGHTS if (path / name).is_file()), None)
    if not (path / 'config.json').is_file() or weights is None:
        raise CheckpointError(f'{path} is a folder without config.json and {" or ".join(_HUB_WEIGHTS)}; pass a '
                              f'checkpoint file or a complete Hub-format folder.')
    config = json.loads((path / 'config.json').read_text())
    state_dict = _tensors_only(_load_file(weights), weights)
    return Checkpoint(path, 'hub-folder', state_dict, arch=config.get('architecture'), config=config)


def read_checkpoint(path: PathLike, use_ema: bool = False, prefer_ema: bool = False) -> Checkpoint:
    """Read a timm state dict or ``train.py`` checkpoint, an authors' reference checkpoint or a Hub-format folder.

    Args:
        use_ema: Take the EMA weights (``state_dict_ema``); an error if there are none.
        prefer_ema: Take the EMA weights when there are any (as timm's ``load_checkpoint`` does), else the raw ones.
    """
    path = Path(path)
    if path.is_dir():
        return _read_hub_folder(path, use_ema)
    if not path.is_file():
        raise FileNotFoundError(f'Checkpoint {path} does not exist; pass the path of a .pth / .pth.tar / .safetensors '
                                f'file or a Hub-format folder.')
    raw = _load_file(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f'{path} holds a {type(raw).__name__}, not a state dict or a training checkpoint.')
    keys = _EMA_KEYS if use_ema else _EMA_KEYS + _WEIGHTS_KEYS if prefer_ema else _WEIGHTS_KEYS
    weights_key = next((k for k in keys if isinstance(raw.get(k), dict)), None)
    if use_ema and weights_key is None:
        raise CheckpointError(f'{path} has no EMA weights (state_dict_ema); drop --use-ema to use its state_dict.')
    state_dict = _tensors_only(raw[weights_key] if weights_key else raw, path)
    kind = 'timm'
    if is_reference_state_dict(state_dict):
        kind = 'reference-maf' if 'best_prec1' in raw and weights_key == 'state_dict' else 'reference-mrap'
    args, arch, epoch = raw.get('args'), raw.get('arch'), raw.get('epoch')
    train_args = vars(args) if isinstance(args, argparse.Namespace) else dict(args) if isinstance(args, dict) else {}
    return Checkpoint(path, kind, state_dict, weights_key, arch=arch if isinstance(arch, str) else None,
                      train_args=train_args, epoch=epoch if isinstance(epoch, int) else None)


def classifier_classes(state_dict: Mapping[str, torch.Tensor], classifier: str = 'classifier') -> Optional[int]:
    """Rows of ``<classifier>.weight`` (the number of classes it predicts), or None if there is none."""
    weight = state_dict.get(f'{classifier}.weight')
    return None if weight is None else int(weight.shape[0])


def checkpoint_num_classes(num_classes: Optional[int], found: Optional[int], source: str,
                           model_name: str) -> Optional[int]:
    """``found`` (the checkpoint classifier's classes), else ``num_classes``; a ``CheckpointError`` if they differ."""
    if num_classes is not None and found is not None and num_classes != found:
        raise CheckpointError(
            f'--num-classes {num_classes} does not match the checkpoint classifier ({found} classes): {source} has a '
            f'{found}-class classifier but model {model_name} was built with {num_classes} classes: pass '
            f'--num-classes {found} or drop --num-classes to take it from the checkpoint.')
    return found if found is not None else num_classes


@dataclass
class FitReport:
    """How a state dict differs from a model's: key names and shapes (checkpoint, model)."""
    missing: List[str]
    unexpected: List[str]
    shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]
    classifier: Optional[str] = None

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    def message(self, source: str, model_name: str, arch: Optional[str] = None) -> str:
        """What does not fit and the fix, e.g. ``--checkpoint x.pth does not fit mobilenetv2_mrap: ...``."""
        head = {f'{self.classifier}.weight', f'{self.classifier}.bias'}
        if self.shapes and not (self.missing or self.unexpected) and all(k in head for k, _, _ in self.shapes):
            _, found, built = next(s for s in self.shapes if s[0].endswith('.weight'))
            return (f'{source} has a {found[0]}-class classifier but model {model_name} was built with {built[0]} '
                    f'classes: pass --num-classes {found[0]}.')
        details = [f'{len(keys)} {what} {keys[:3]}' for what, keys in (
            ('missing keys', self.missing), ('unexpected keys', self.unexpected),
            ('shape mismatches (key, checkpoint, model)', self.shapes)) if keys]
        if any(k.startswith('backbone.') for k in self.unexpected):
            hint = "it is an authors' reference checkpoint: convert it first with python -m timm_mrap.convert"
        elif arch and arch.split('.')[0] != model_name.split('.')[0]:
            hint = f'the checkpoint says it was trained as {arch}: pass --model {arch}'
        else:
            hint = 'pass the --model (and --model-kwargs, e.g. attn=cbam) the checkpoint was trained with'
        return f'{source} does not fit {model_name}: {", ".join(details)}; {hint}.'


def check_fit(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> FitReport:
    """Compare ``state_dict`` with ``model.state_dict()`` (names and shapes)."""
    expected = model.state_dict()
    return FitReport(
        missing=[k for k in expected if k not in state_dict],
        unexpected=[k for k in state_dict if k not in expected],
        shapes=[(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
                if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)],
        classifier=getattr(model, 'pretrained_cfg', {}).get('classifier') or 'classifier',
    )


def load_model(model_name: str, checkpoint: Optional[Union[PathLike, Checkpoint]] = None, pretrained: bool = False,
               num_classes: Optional[int] = None, source: Optional[str] = None, **model_kwargs) -> nn.Module:
    """``timm.create_model`` (in eval mode), with a timm checkpoint (file or already read) loaded strictly; a file's
    EMA weights are taken when it has them (as timm's ``load_checkpoint``).

    Args:
        num_classes: Classifier size; None takes the checkpoint classifier's (an error if both are given and differ).
        source: How errors name the checkpoint (default ``Checkpoint PATH``), e.g. ``--checkpoint PATH``.
    """
    ckpt = checkpoint
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        ckpt = read_checkpoint(checkpoint, prefer_ema=True)
    if ckpt is not None:
        source = source or f'Checkpoint {ckpt.path}'
        classifier = getattr(timm.models.get_pretrained_cfg(model_name.split('.')[0]), 'classifier', None)
        found = classifier_classes(ckpt.state_dict, classifier or 'classifier')
        num_classes = checkpoint_num_classes(num_classes, found, source, model_name)
    if num_classes is not None:
        model_kwargs['num_classes'] = num_classes
    model = timm.create_model(model_name, pretrained=pretrained, **model_kwargs)
    if ckpt is not None:
        report = check_fit(model, ckpt.state_dict)
        if not report.fits:
            raise CheckpointError(report.message(source, model_name, ckpt.arch))
        model.load_state_dict(ckpt.state_dict)
    return model.eval()


@contextlib.contextmanager
def reraise_as(error: Type[Exception], prefix: str = '', missing_file: bool = True) -> Iterator[None]:
    """Re-raise checkpoint errors (and ``FileNotFoundError`` unless not ``missing_file``) as ``error``."""
    caught = (CheckpointError, FileNotFoundError) if missing_file else (CheckpointError,)
    try:
        yield
    except caught as e:
        if isinstance(e, error):
            raise
        raise error(f'{prefix}{e}') from e


def save_hub_folder(model: nn.Module, out_dir: PathLike, model_config: Optional[Dict[str, Any]] = None,
                    data_config: Optional[Dict[str, Any]] = None) -> None:
    """timm's ``save_for_hf``, then ``model_args`` without ``num_classes`` (transformers' ``TimmWrapper`` passes it
    again) and without ``in_chans`` / ``global_pool`` where they are 3 / avg."""
    save_for_hf(model, str(out_dir), model_config=model_config, safe_serialization=True, data_config=data_config)
    path = Path(out_dir) / 'config.json'
    config = json.loads(path.read_text())
    defaults = {'in_chans': 3, 'global_pool': 'avg'}
    model_args = {k: v for k, v in (config.pop('model_args', None) or {}).items()
                  if k != 'num_classes' and defaults.get(k, object()) != v}
    config.update({'model_args': model_args} if model_args else {})
    path.write_text(json.dumps(config, indent=2))  # as save_for_hf writes it
