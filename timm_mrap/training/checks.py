""" Input checks of the built-in trainer / validator: bad data folders and checkpoints become one clear error

Each check raises :class:`InputError` with a message that names the problem and the fix; the command-line entry
points print it as ``error: ...`` and exit with status 2 instead of showing a traceback from deep inside timm or torch.
Corrupt image files are not checked up front (that would read every image): timm's ``ImageDataset`` skips them with a
warning that names the file, and stops after ``TIMM_DATASET_MAX_RETRIES`` (10) consecutive failures.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import timm
from timm.data import create_dataset
from timm.models import load_state_dict

__all__ = ['InputError', 'create_checked_dataset', 'check_num_classes', 'check_class_folders',
           'load_checked_state_dict', 'check_state_dict_fits', 'create_checked_model', 'is_reference_state_dict']

_logger = logging.getLogger(__name__)

_SPLIT_LIKE = {'train', 'training', 'val', 'valid', 'validation', 'eval', 'evaluation', 'test'}


class InputError(ValueError):
    """Bad user input (data folder, flags, checkpoint): the message names the problem and how to fix it."""


def _search_split(root: str, split: str) -> str:
    try:  # timm's own rule for finding a split sub-folder (split name or a synonym, else the root itself)
        from timm.data.dataset_factory import _search_split as timm_search_split
        return timm_search_split(root, split)
    except ImportError:  # pragma: no cover - timm moved it; fall back to the exact split name
        path = os.path.join(root, split)
        return path if os.path.isdir(path) else root


def create_checked_dataset(
        name: str,
        root: Optional[str],
        split: str,
        split_flag: str,
        **kwargs,
):
    """``timm.data.create_dataset`` with clear errors for a missing folder, a missing split or no images.

    Args:
        name: timm dataset name (``''`` for an ImageFolder / ImageTar).
        root: Dataset root (``--data-dir``).
        split: Split name (``train``, ``validation``, ...).
        split_flag: The flag that sets ``split`` (named in errors).
        **kwargs: Passed to ``create_dataset``.
    """
    if not root:
        raise InputError('no data folder given: pass --data-dir DIR (a folder with train/ and validation/ '
                         'sub-folders that each hold one folder of images per class).')
    if not name or name.startswith('folder') or name.startswith('tar'):
        if not os.path.exists(root):
            raise InputError(f'data folder {root} does not exist: check --data-dir (expected DIR/{split}/<class>/'
                             f'<image> files).')
        if os.path.isdir(root):
            split_root = _search_split(root, split)
            if os.path.samefile(split_root, root):
                found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
                if _SPLIT_LIKE.intersection(found):
                    raise InputError(
                        f'no split folder {split!r} in {root} (it holds {", ".join(found)}): pass {split_flag} with '
                        f'one of those names.')
                _logger.info(f'No {split!r} sub-folder in {root}: using {root} itself as the {split} split.')
    try:
        return create_dataset(name, root=root, split=split, **kwargs)
    except RuntimeError as e:
        if 'Found 0 images' in str(e):
            raise InputError(
                f'no images for split {split!r} under {root} ({e}). Expected {root}/{split}/<class>/<image> files; '
                f'check --data-dir and {split_flag}.') from e
        raise


def class_names(dataset) -> Optional[List[str]]:
    """Class folder names of an ImageFolder dataset, in index order (None for other dataset types)."""
    class_to_idx = getattr(getattr(dataset, 'reader', None), 'class_to_idx', None)
    if not class_to_idx:
        return None
    return [c for c, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ', '.join(names[:limit])
    return shown + (f', ... ({len(names)} in all)' if len(names) > limit else '')


def check_num_classes(num_classes: Optional[int], dataset, where: str) -> Optional[int]:
    """The class count to use: ``--num-classes`` if it matches the class folders, else an error naming both.

    Returns the number of class folders when ``num_classes`` is None (None for datasets without class folders).
    """
    names = class_names(dataset)
    if names is None:
        return num_classes
    if num_classes is not None and num_classes != len(names):
        raise InputError(
            f'--num-classes {num_classes} does not match the {len(names)} class folders of {where} '
            f'({_short_list(names)}): pass --num-classes {len(names)} or drop the flag to use the folder count.')
    return len(names)


def check_class_folders(train_dataset, eval_dataset, train_where: str, eval_where: str) -> None:
    """Both splits must have the same class folders, else ImageFolder silently maps labels differently."""
    train_names, eval_names = class_names(train_dataset), class_names(eval_dataset)
    if train_names is None or eval_names is None or train_names == eval_names:
        return
    only_train = sorted(set(train_names) - set(eval_names))
    only_eval = sorted(set(eval_names) - set(train_names))
    raise InputError(
        f'the class folders of {train_where} and {eval_where} differ (only in train: {_short_list(only_train) or "-"}; '
        f'only in eval: {_short_list(only_eval) or "-"}): labels would not line up. Give both splits the same class '
        f'folders, or pass --class-map FILE listing the classes.')


def is_reference_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True for the authors' reference MRAP / MAF checkpoints (``backbone.stageS.unitU`` keys)."""
    return any(k.startswith('backbone.') for k in state_dict) and 'classifier.conv.weight' in state_dict


def _checkpoint_arch(path: str) -> Optional[str]:
    """The model name a timm training checkpoint was saved with (``arch``), if readable."""
    if str(path).endswith('.safetensors'):
        return None
    try:
        from timm.utils.checkpoint_saver import load_checkpoint_metadata
        meta = load_checkpoint_metadata(path)
    except Exception:
        return None
    return meta.get('arch') if isinstance(meta, dict) else None


def load_checked_state_dict(path: str, use_ema: bool = False, flag: str = '--checkpoint') -> Dict[str, torch.Tensor]:
    """timm's ``load_state_dict`` (``.pth.tar`` / ``.pth`` / ``.safetensors``) with clear errors for bad files."""
    if not path or not os.path.isfile(path):
        raise InputError(f'{flag} {path} is not a file: pass the path of a .pth.tar / .pth / .safetensors checkpoint.')
    try:
        return load_state_dict(path, use_ema=use_ema)
    except Exception as e:
        raise InputError(f'{flag} {path} could not be read as a checkpoint ({type(e).__name__}: {e}); is the file '
                         f'complete and written by torch.save or safetensors?') from e


def _classifier_key(model: nn.Module) -> Optional[str]:
    name = getattr(model, 'pretrained_cfg', {}).get('classifier')
    return f'{name}.weight' if name else None


def checkpoint_num_classes(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Optional[int]:
    """Rows of the checkpoint's classifier weight (the model's ``pretrained_cfg['classifier']``), if present."""
    key = _classifier_key(model)
    if key and key in state_dict and state_dict[key].ndim >= 1:
        return int(state_dict[key].shape[0])
    return None


def check_state_dict_fits(
        model: nn.Module,
        state_dict: Dict[str, torch.Tensor],
        model_name: str,
        path: str,
        flag: str = '--checkpoint',
) -> None:
    """Raise an :class:`InputError` naming the model, the checkpoint and the fix when the weights do not fit."""
    model_sd = model.state_dict()
    missing = [k for k in model_sd if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_sd]
    shapes = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in model_sd.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    classifier = _classifier_key(model)
    head_keys = {classifier, classifier.replace('.weight', '.bias')} if classifier else set()
    if not missing and not unexpected and shapes and all(k in head_keys for k, _, _ in shapes):
        found = checkpoint_num_classes(state_dict, model)
        raise InputError(
            f'{flag} {path} has a {found}-class classifier but model {model_name} was built with '
            f'{model_sd[classifier].shape[0]} classes: pass --num-classes {found}.')
    arch = _checkpoint_arch(path)
    details = []
    if missing:
        details.append(f'{len(missing)} model keys missing from it (first: {missing[0]})')
    if unexpected:
        details.append(f'{len(unexpected)} keys the model lacks (first: {unexpected[0]})')
    if shapes:
        k, ck, mk = shapes[0]
        details.append(f'{len(shapes)} shape mismatches (first: {k} {list(ck)} in the checkpoint vs {list(mk)})')
    hint = (f'it was saved from model {arch!r}: pass --model {arch}' if arch and arch != model_name else
            'pass the --model (and --model-kwargs) the checkpoint was trained with')
    raise InputError(f'{flag} {path} does not fit model {model_name}: {"; ".join(details)}. {hint}.')


def create_checked_model(model_name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` with a clear error for an unknown model name."""
    if not timm.is_model(model_name) and ':' not in model_name:
        mrap = ', '.join(timm.list_models('*mrap*') + timm.list_models('*mafc*'))
        raise InputError(f'unknown --model {model_name!r}: pass a timm model name (timm-mrap registers {mrap}).')
    return timm.create_model(model_name, **kwargs)


def split_where(root: str, split: str) -> str:
    """A readable name for a split folder in messages."""
    return os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else f'{root} (split {split!r})'


def format_error(e: BaseException) -> Tuple[str, int]:
    """The one-line message and exit status the command-line entry points use for an :class:`InputError`."""
    return f'error: {e}\n', 2
