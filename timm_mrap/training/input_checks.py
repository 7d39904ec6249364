""" Input checks of training and validation, shared by the launcher (``train.sh`` / ``validate.sh``) and the built-in
trainer / validator, so both runners accept and reject the same inputs

Each check raises :class:`InputError` naming the problem and the fix (the entry points print ``error: ...``, exit 2).
Split folders are found by timm's rule; corrupt images are left to timm's ``ImageDataset``, which skips them with a
warning naming the file.
"""
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn

import timm
from timm.data import create_dataset
from timm.data.dataset_factory import _search_split  # timm's split rule; private in timm, with no public alias

from ..checkpoint import Checkpoint, check_fit, load_model, read_checkpoint, reraise_as
from ..errors import ConversionError, InputError

__all__ = [
    'InputError', 'find_split', 'check_split_folder', 'check_data_dir', 'create_checked_dataset', 'class_names',
    'folder_num_classes', 'check_class_folders', 'create_checked_model', 'read_checked_checkpoint',
    'model_from_checkpoint', 'split_where',
]

_logger = logging.getLogger(__name__)

_DATA_LAYOUT = 'DIR/train/<class>/<image> and DIR/validation/<class>/<image>'


def find_split(root: str, split: str) -> Optional[Path]:
    """The sub-folder of ``root`` that holds ``split`` by timm's rule (its name, else a synonym), or None."""
    folder = Path(_search_split(root, split))
    return folder if folder != Path(root) and folder.is_dir() else None


def _class_folders(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))


def check_split_folder(root: Optional[str], split: str, split_flag: str) -> Path:
    """The folder split ``split`` of ``root`` is read from, after checking that it exists and has class folders;
    ``split_flag`` (the flag that set ``split``) is named in errors."""
    if not root:
        raise InputError(f'no data folder given: pass --data-dir DIR (expected {_DATA_LAYOUT}).')
    if not os.path.isdir(root):
        raise InputError(f'data folder {root} does not exist: check --data-dir (expected {_DATA_LAYOUT}). The data '
                         f'tools build such folders: python -m timm_mrap.training.datasets --help.')
    folder = find_split(root, split)
    if folder is None:
        found = _class_folders(Path(root))
        if any(find_split(root, name) for name in ('train', 'validation', 'test')):
            raise InputError(f'no split folder {split!r} in {root} (it holds {", ".join(found)}): pass {split_flag} '
                             f'with one of those names.')
        _logger.info(f'No {split!r} sub-folder in {root}: using {root} itself as the {split} split.')
        folder = Path(root)
    if not _class_folders(folder):
        raise InputError(f'{folder} has no class folders; expected {folder}/<class>/<image> files.')
    return folder


def _is_image_folder(dataset: Optional[str], root: Optional[str]) -> bool:
    """Whether timm reads ``root`` as an ImageFolder (not a tar archive, nor a ``torch/``, ``hfds/``... data set)."""
    return (not dataset or dataset.startswith('folder')) and not (root and os.path.isfile(root))


def check_data_dir(data_dir: str, splits: Sequence[Tuple[str, str]], dataset: Optional[str] = None) -> List[str]:
    """Check the ``(split, flag)`` pairs of an ImageFolder data set before a runner reads it; the class folders of the
    first split. Other kinds of ``dataset`` (``torch/``, ``hfds/``, tar archives...) are timm's to check."""
    if not _is_image_folder(dataset, data_dir):
        return []
    return [_class_folders(check_split_folder(data_dir, split, flag)) for split, flag in splits][0]


def create_checked_dataset(name: str, root: Optional[str], split: str, split_flag: str, **kwargs):
    """``timm.data.create_dataset(name, root, split, **kwargs)`` after :func:`check_split_folder`; a split timm
    cannot read raises an :class:`InputError` with timm's reason and the flags to check."""
    if not root or _is_image_folder(name, root):
        check_split_folder(root, split, split_flag)
    try:
        return create_dataset(name, root=root, split=split, **kwargs)
    except RuntimeError as e:  # timm's readers raise RuntimeError for a split they cannot read (e.g. no images)
        raise InputError(f'split {split!r} of {root} could not be read: {e} Check --data-dir and {split_flag}.') from e


def class_names(dataset) -> Optional[List[str]]:
    """Class folder names of an ImageFolder dataset, in index order (None for other dataset types)."""
    class_to_idx = getattr(getattr(dataset, 'reader', None), 'class_to_idx', None)
    return sorted(class_to_idx, key=class_to_idx.get) if class_to_idx else None


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ', '.join(names[:limit])
    return shown + (f', ... ({len(names)} in all)' if len(names) > limit else '')


def folder_num_classes(num_classes: Optional[int], names: Optional[Sequence[str]], where: str) -> Optional[int]:
    """The class count to train: the number of class folders when ``num_classes`` is None, else ``num_classes``.
    Fewer than the class folders is an error; more is a warning (timm's ``train.py`` allows it)."""
    if not names:
        return num_classes
    if num_classes is None:
        return len(names)
    if num_classes < len(names):
        raise InputError(
            f'--num-classes {num_classes} does not match the {len(names)} class folders of {where} '
            f'({_short_list(names)}): pass --num-classes {len(names)} or drop the flag to use the folder count.')
    if num_classes > len(names):
        _logger.warning(f'--num-classes {num_classes} but {where} has {len(names)} class folders: the classifier '
                        f'has {num_classes - len(names)} outputs no image trains.')
    return num_classes


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


def read_checked_checkpoint(path: str, flag: str, prefer_ema: bool = False, model: Optional[nn.Module] = None,
                            model_name: str = '') -> Checkpoint:
    """``timm_mrap.checkpoint.read_checkpoint`` with errors that name ``flag``; given ``model`` (built as
    ``model_name``), an :class:`InputError` naming the fix when the weights do not fit it."""
    with reraise_as(InputError, prefix=f'{flag}: '):
        checkpoint = read_checkpoint(path, prefer_ema=prefer_ema)
    report = check_fit(model, checkpoint.state_dict) if model is not None else None
    if report is not None and not report.fits:
        raise InputError(report.message(f'{flag} {checkpoint.path}', model_name, checkpoint.arch))
    return checkpoint


def model_from_checkpoint(model_name: str, path: str, num_classes: Optional[int] = None, use_ema: bool = False,
                          flag: str = '--checkpoint', **model_kwargs) -> Tuple[nn.Module, Checkpoint]:
    """The model (in train mode) with the weights of a timm checkpoint, a Hub folder (which names its own
    architecture) or an authors' reference checkpoint (converted), and the checkpoint.

    ``num_classes`` None takes the checkpoint classifier's; ``use_ema`` takes a training checkpoint's EMA weights;
    ``flag`` is named in errors; ``model_kwargs`` go to ``create_model``.
    """
    checkpoint = read_checked_checkpoint(path, flag, prefer_ema=use_ema)
    if checkpoint.kind == 'hub-folder':
        return create_checked_model(f'local-dir:{path}', pretrained=True, num_classes=num_classes), checkpoint
    if checkpoint.is_reference:
        from ..convert import convert_checkpoint
        _logger.info(f'{path} is a reference MRAP / MAF checkpoint: converting it for {model_name}.')
        user_kwargs = {k: v for k, v in model_kwargs.items() if k not in ('in_chans', 'global_pool')}
        try:
            return convert_checkpoint(path, model_name, num_classes=num_classes, **user_kwargs).train(), checkpoint
        except ConversionError as e:
            raise InputError(f'{flag} {path} (a reference checkpoint) does not convert to {model_name}: {e}') from e
    _check_model_name(model_name)
    with reraise_as(InputError):
        model = load_model(model_name, checkpoint, num_classes=num_classes, source=f'{flag} {path}', **model_kwargs)
    return model.train(), checkpoint


def _check_model_name(model_name: str) -> None:
    if not timm.is_model(model_name) and ':' not in model_name:
        mrap = ', '.join(timm.list_models('*mrap*') + timm.list_models('*mafc*'))
        raise InputError(f'unknown --model {model_name!r}: pass a timm model name (timm-mrap registers {mrap}).')


def create_checked_model(model_name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` with a clear error for an unknown model name."""
    _check_model_name(model_name)
    return timm.create_model(model_name, **kwargs)


def split_where(root: str, split: str) -> str:
    """A readable name for a split folder in messages."""
    folder = find_split(root, split) if root and os.path.isdir(root) else None
    return str(folder) if folder is not None else f'{root} (split {split!r})'

