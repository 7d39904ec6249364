""" Hub folders: a checkpoint's weights (loaded strictly) as model.safetensors, timm's config.json and the filled
model card, staged beside ``out_dir`` and moved into place when complete; nothing is uploaded (``push.py``)."""
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

from timm.data import ImageNetInfo
from timm.models import get_pretrained_cfg, is_model
from timm.models._hub import load_model_config_from_path

from ..checkpoint import (
    Checkpoint, PathLike, classifier_classes, load_model, read_checkpoint, reraise_as, save_hub_folder,
)
from ..errors import CardError, HubFolderError
from .cards import ModelStats, card_source, card_values, measure_model, read_results, render_card

__all__ = [
    'FOLDER_FILES', 'WEIGHT_FORMATS', 'HubFolderError', 'HubFolderResult', 'checkpoint_description', 'read_label_names',
    'default_repo_id', 'write_hub_folder',
]

FOLDER_FILES = ('config.json', 'model.safetensors', 'README.md')
WEIGHT_FORMATS = ('auto', 'timm', 'reference')
# data config arguments of timm's train.py / validate.py, as resolve_data_config reads them
DATA_CONFIG_KEYS = ('input_size', 'img_size', 'in_chans', 'crop_pct', 'crop_mode', 'mean', 'std', 'interpolation')
# what a tag says about the data, for tags whose dataset is fixed (others need --dataset)
KNOWN_TAG_DATASETS = {
    'rein100': ("ReIN100: the authors' 100-class subset of ImageNet-1k (full ImageNet-1k train / val images of the "
                'classes in timm_mrap/training/class_lists/rein100_classes.txt)', 'imagenet-1k'),
    'in100': ('ImageNet-100 (the CMC 100-class subset of ImageNet-1k)', 'imagenet-1k'),
    'in1k': ('ImageNet-1k', 'imagenet-1k'),
}


@dataclass
class HubFolderResult:
    """A written Hub folder and what went into its card."""
    out_dir: Path
    model: nn.Module
    repo_id: str
    stats: ModelStats
    results: Optional[Dict[str, Any]]


def checkpoint_description(checkpoint: Checkpoint) -> str:
    """Where the weights came from, for the model card."""
    name = checkpoint.path.name
    if checkpoint.is_reference:
        return f"the authors' reference checkpoint `{name}`, converted by `timm_mrap.convert`"
    if checkpoint.kind == 'hub-folder':
        return f'Hub folder `{name}`'
    if checkpoint.path.suffix == '.safetensors':
        return f'state dict `{name}` (safetensors)'
    ema = checkpoint.weights_key in ('state_dict_ema', 'model_ema')
    which = f'{"EMA" if ema else "raw"} weights ({checkpoint.weights_key or "bare state dict"})'
    epoch = f', epoch {checkpoint.epoch}' if checkpoint.epoch is not None else ''
    return f'timm training checkpoint `{name}`: {which}{epoch}'


def read_label_names(source: PathLike) -> List[str]:
    """Class names in classifier order: a text file (one per line, like timm's ``--class-map``) or an image folder
    (its class folders in the order timm's ``ImageFolder`` reader assigns indices)."""
    source = Path(source)
    if source.is_dir():
        from timm.data.readers.reader_image_folder import find_images_and_targets
        _, class_to_idx = find_images_and_targets(str(source))
        names = sorted(class_to_idx, key=class_to_idx.get)
        if not names or names == ['']:
            raise HubFolderError(f'{source} has no class folders with images; pass the folder that holds one folder '
                                 f'per class (e.g. DATA/validation), or a text file with one class name per line.')
    elif source.is_file():
        names = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    else:
        raise HubFolderError(f'Label names {source} is neither a file nor a folder.')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise HubFolderError(f'{source} repeats class names {duplicates[:5]}; each class needs a unique name.')
    return names


def default_repo_id(architecture: str, tag: str) -> Optional[str]:
    """The Hub repo that ``pretrained=True`` loads for ``architecture.tag`` (None when the tag is not registered)."""
    try:
        cfg = get_pretrained_cfg(f'{architecture}.{tag}', allow_unregistered=False)
    except RuntimeError:
        return None
    return cfg.hf_hub_id or None


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f'{out_dir} is a file; choose a folder for --out.')
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f'{out_dir} exists and is not empty; choose another --out or pass --overwrite to '
                                  f'replace the Hub folder in it.')
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in FOLDER_FILES)
        if foreign:
            raise FileExistsError(f'--overwrite replaces only an earlier Hub folder, but {out_dir} also holds '
                                  f'{foreign[:5]}; choose another --out.')


def _read_source(src: PathLike, use_ema: bool, weights_format: str) -> Checkpoint:
    """The checkpoint to publish, in the layout ``weights_format`` (one of ``WEIGHT_FORMATS``) asks for."""
    with reraise_as(HubFolderError):
        checkpoint = read_checkpoint(src, use_ema=use_ema)
    found_format = 'reference' if checkpoint.is_reference else 'timm'
    if weights_format not in ('auto', found_format):
        raise HubFolderError(f'{src} has {found_format} keys (e.g. {next(iter(checkpoint.state_dict))!r}), not '
                             f'{weights_format} ones; drop --format or pass --format {found_format}.')
    return checkpoint


def _architecture(checkpoint: Checkpoint, model_name: Optional[str]) -> Tuple[str, str]:
    """``(architecture, tag)`` from ``--model`` (``architecture[.tag]``) or the checkpoint's ``arch``."""
    model_name = model_name or checkpoint.arch
    if not model_name:
        raise HubFolderError(f'{checkpoint.path} does not name its architecture; pass --model (e.g. mobilenetv2_mrap).')
    architecture, _, tag = model_name.partition('.')
    if not is_model(architecture):
        raise HubFolderError(f'{architecture!r} is not a registered model; see timm.list_models("*mrap*") / "*mafc*".')
    if checkpoint.arch and checkpoint.arch.split('.')[0] != architecture:
        raise HubFolderError(f'{checkpoint.path} was trained as {checkpoint.arch}, not {architecture}; fix --model.')
    return architecture, tag


def _card_identity(architecture: str, tag: Optional[str], repo_id: Optional[str], dataset: Optional[str],
                   dataset_id: Optional[str]) -> Tuple[str, str, str, str]:
    """``(tag, repo_id, dataset, dataset_id)`` with the defaults of a registered tag filled in."""
    tag = tag or get_pretrained_cfg(architecture).tag
    if not tag:
        raise HubFolderError(f'{architecture} has no default tag; pass --tag naming the training data (e.g. digits).')
    repo_id = repo_id or default_repo_id(architecture, tag)
    if not repo_id:
        raise HubFolderError(f'{architecture}.{tag} has no registered Hub repo; pass --repo-id (e.g. '
                             f'your-name/{architecture}.{tag}).')
    known = KNOWN_TAG_DATASETS.get(tag)
    dataset = dataset or (known[0] if known else None)
    if not dataset:
        raise HubFolderError(f'Tag {tag!r} does not say which data trained these weights; pass --dataset (e.g. '
                             f'"scikit-learn digits, 10 classes").')
    dataset_id = dataset_id or (known[1] if known and dataset == known[0] else
                                re.sub(r'[^a-z0-9]+', '-', dataset.lower()).strip('-'))
    return tag, repo_id, dataset, dataset_id


def _build_model(checkpoint: Checkpoint, architecture: str, num_classes: Optional[int],
                 model_kwargs: Optional[Dict[str, Any]], data_config: Optional[Dict[str, Any]]):
    """The model with the checkpoint's weights, and the data config to record (checkpoint's, then ``data_config``)."""
    train_args, src = checkpoint.train_args, checkpoint.path
    kwargs = dict(train_args.get('model_kwargs') or checkpoint.config.get('model_args') or {})
    if train_args.get('in_chans') is not None:
        kwargs['in_chans'] = train_args['in_chans']
    kwargs.update(model_kwargs or {})
    source_cfg = checkpoint.config.get('pretrained_cfg') or train_args  # a Hub folder's, else train.py's args
    data_args = {k: source_cfg[k] for k in DATA_CONFIG_KEYS if source_cfg.get(k) is not None}
    data_args.update({k: v for k, v in (data_config or {}).items() if v is not None})
    if checkpoint.is_reference:
        from ..convert import convert_checkpoint
        model = convert_checkpoint(str(src), architecture, num_classes=num_classes, **kwargs)
        return model, {'mean': model.pretrained_cfg['mean'], 'std': model.pretrained_cfg['std'], **data_args}
    classifier = get_pretrained_cfg(architecture).classifier or 'classifier'
    if num_classes is None and classifier_classes(checkpoint.state_dict, classifier) is None:
        raise HubFolderError(f'{src} has no {classifier}.weight to infer the classes from; pass --num-classes.')
    source = f'{src}' + (f' (built with {kwargs})' if kwargs else '')
    with reraise_as(HubFolderError):
        return load_model(architecture, checkpoint, num_classes=num_classes, source=source, **kwargs), data_args


def _label_config(label_names: Optional[Sequence[str]], num_classes: int) -> Dict[str, Any]:
    """``config.json``'s ``label_names``, and timm's ImageNet descriptions when all are ImageNet-1k synsets."""
    if label_names is None:
        return {}
    if len(label_names) != num_classes:
        raise HubFolderError(f'{len(label_names)} label names for {num_classes} classes; pass the class list the '
                             f'model was trained with.')
    config = {'label_names': list(label_names)}
    if all(re.fullmatch(r'n\d{8}', n) for n in label_names):
        info = ImageNetInfo('imagenet-1k')
        if set(label_names) <= set(info.label_names()):
            config['label_descriptions'] = {n: info.label_name_to_description(n) for n in label_names}
    return config


def _result_row(results: Optional[PathLike], architecture: str, model: nn.Module) -> Optional[Dict[str, Any]]:
    """The one validation result of these weights in ``results`` (None without a file)."""
    if results is None:
        return None
    rows = read_results(results)
    if len(rows) > 1:
        rows = [r for r in rows if r['model'].split('.')[0] == architecture]
    if len(rows) != 1:
        raise CardError(f'{results} must hold one result for {architecture} (found {len(rows)}).')
    params = sum(p.numel() for p in model.parameters())
    if 'param_count' in rows[0] and abs(rows[0]['param_count'] - params / 1e6) > 0.01:
        raise CardError(f'{results} was measured on a model with {rows[0]["param_count"]} M params, these '
                        f'weights have {params / 1e6:.2f} M: results of another model.')
    return rows[0]


def write_hub_folder(
        src: PathLike, out_dir: PathLike, *, model_name: Optional[str] = None, tag: Optional[str] = None,
        repo_id: Optional[str] = None, num_classes: Optional[int] = None, label_names: Optional[Sequence[str]] = None,
        use_ema: bool = False, weights_format: str = 'auto', model_kwargs: Optional[Dict[str, Any]] = None,
        data_config: Optional[Dict[str, Any]] = None, dataset: Optional[str] = None, dataset_id: Optional[str] = None,
        license: Optional[str] = None, results: Optional[PathLike] = None, compare: Sequence[PathLike] = (),
        card_dir: Optional[PathLike] = None, overwrite: bool = False) -> HubFolderResult:
    """Write a Hub-format folder for ``src``'s weights; nothing is uploaded.

    Args:
        model_name: Architecture, optionally with its tag (``mobilenetv2_mrap.rein100``); default: the checkpoint's.
        tag / repo_id: Default: the one in ``model_name``, else the default tag, and the repo it loads from.
        model_kwargs / data_config: Model arguments and preprocessing of these weights, over the checkpoint's own.
        dataset / dataset_id: Training data for the card and its Hub id; default from known tags (``rein100``...).
        results / compare: timm ``validate.py`` results files of these weights / of other models for comparison.
        card_dir: Folder of architecture cards to use instead of the packaged template (e.g. an edited ``hf_cards``).
        overwrite: Replace an earlier Hub folder in ``out_dir``.
    """
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    checkpoint = _read_source(src, use_ema, weights_format)
    architecture, name_tag = _architecture(checkpoint, model_name)
    template = card_source(architecture, card_dir)
    tag, repo_id, dataset, dataset_id = _card_identity(architecture, tag or name_tag, repo_id, dataset, dataset_id)
    model, data_args = _build_model(checkpoint, architecture, num_classes, model_kwargs, data_config)
    model_config = _label_config(label_names, model.num_classes)
    license = license or model.pretrained_cfg.get('license', 'apache-2.0')
    model.pretrained_cfg = {**model.pretrained_cfg, 'tag': tag, 'license': license}
    result_row = _result_row(results, architecture, model)
    compare_rows = [row for path in compare for row in read_results(path)]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f'.{out_dir.name}.', dir=out_dir.parent) as tmp:  # removed on failure
        tmp_dir = Path(tmp)
        tmp_dir.chmod(0o755)  # mkdtemp's 0o700 would follow the folder into place
        save_hub_folder(model, tmp_dir, model_config=model_config, data_config=data_args)
        stats = measure_model(model, load_model_config_from_path(tmp_dir)[0]['input_size'])
        registered = default_repo_id(architecture, tag) == repo_id
        values = card_values(
            model_name=f'{architecture}.{tag}', repo_id=repo_id, stats=stats, num_classes=model.num_classes,
            create_name=f'{architecture}.{tag}' if registered else f'hf-hub:{repo_id}', dataset=dataset,
            dataset_id=dataset_id, license=license, weights_source=checkpoint_description(checkpoint),
            results=result_row, compare=compare_rows)
        (tmp_dir / 'README.md').write_text(render_card(template, values), encoding='utf-8')
        shutil.rmtree(out_dir, ignore_errors=True)  # only an earlier Hub folder: _prepare_out_dir checked
        os.replace(tmp_dir, out_dir)
    return HubFolderResult(out_dir, model, repo_id, stats, result_row)
