""" Model cards: the templates in ``hf_cards/`` filled with numbers measured at export time

A card is timm's card layout (front matter, Model Details, Model Usage, Model Comparison, Citation) with
``{{ name }}`` placeholders. Every value comes from the exported model or from a validation results file: params
are counted, MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2, convolutions and
matrix products only), feature shapes come from a forward pass, and accuracy comes only from timm's ``validate.py``
results (JSON or CSV). Without results the card says the accuracy is not yet measured.
"""
import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..complexity import MAC_COUNTER, count_macs, count_params

__all__ = [
    'CARD_DIR', 'ModelStats', 'CardError', 'card_path', 'measure_model', 'read_results', 'comparison_section',
    'render_card', 'placeholders',
]

CARD_DIR = Path(__file__).resolve().parents[2] / 'hf_cards'

_PLACEHOLDER_RE = re.compile(r'{{\s*(\w+)\s*}}')


class CardError(ValueError):
    """A card template, value or results file that cannot make a complete card."""


@dataclass(frozen=True)
class ModelStats:
    """Measured facts of one model at one input size."""
    params: int
    macs: int
    input_size: Tuple[int, int, int]
    feature_shapes: Tuple[Tuple[int, ...], ...]
    unpooled_shape: Tuple[int, ...]
    embedding_shape: Tuple[int, ...]

    @property
    def image_size(self) -> str:
        return f'{self.input_size[1]} x {self.input_size[2]}'


def card_path(architecture: str, card_dir: Optional[Union[str, Path]] = None) -> Path:
    """The card template of a registered architecture (``hf_cards/<architecture>.md``)."""
    card_dir = Path(card_dir) if card_dir is not None else CARD_DIR
    path = card_dir / f'{architecture}.md'
    if not path.is_file():
        raise CardError(
            f'No model card template {path} for {architecture}; add hf_cards/{architecture}.md '
            f'(or pass --card-dir where the hf_cards folder of a timm-mrap checkout lives).')
    return path


@torch.no_grad()
def measure_model(model: nn.Module, input_size: Sequence[int]) -> ModelStats:
    """Count params and MACs and record the feature / embedding shapes of ``model`` (eval mode) for one image."""
    was_training = model.training
    model.eval()
    try:
        unpooled, features = model.forward_intermediates(torch.zeros(1, *input_size))
        embedding = model.forward_head(unpooled, pre_logits=True)
    finally:
        model.train(was_training)
    return ModelStats(
        params=count_params(model),
        macs=count_macs(model, input_size),
        input_size=tuple(int(v) for v in input_size),
        feature_shapes=tuple(tuple(f.shape) for f in features),
        unpooled_shape=tuple(unpooled.shape),
        embedding_shape=tuple(embedding.shape),
    )


def read_results(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Rows of a timm ``validate.py`` results file: ``--results-file`` JSON / CSV, or its stdout after ``--result``.

    Each row needs ``model`` and ``top1``; ``top5``, ``img_size``, ``param_count`` (M) and ``crop_pct`` are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise CardError(f'Results file {path} does not exist; pass the file validate.py wrote (--results-file).')
    text = path.read_text()
    if '--result' in text:  # captured stdout: the JSON follows the marker line
        text = text.split('--result', 1)[1]
    text = text.strip()
    if text.startswith(('{', '[')):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise CardError(f'{path} is not valid JSON ({e}); pass validate.py\'s --results-file output.') from e
        rows = rows if isinstance(rows, list) else [rows]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    parsed = []
    for row in rows:
        if not isinstance(row, dict) or 'top1' not in row or 'model' not in row or row.get('error'):
            raise CardError(f'{path}: {row!r} is not a validate.py result (needs model and top1, no error).')
        out = {'model': str(row['model'])}
        for key in ('top1', 'top5', 'param_count', 'crop_pct'):
            if row.get(key) not in (None, ''):
                out[key] = float(row[key])
        if row.get('img_size') not in (None, ''):
            out['img_size'] = int(row['img_size'])
        parsed.append(out)
    if not parsed:
        raise CardError(f'{path} holds no results.')
    return parsed


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def comparison_section(
        model_label: str,
        stats: ModelStats,
        results: Optional[Dict[str, Any]] = None,
        compare: Sequence[Dict[str, Any]] = (),
) -> str:
    """Markdown for Model Comparison: measured accuracy of this model (and others, same evaluation), or a note."""
    if results is None:
        note = ('Top-1 / top-5 accuracy: **not yet measured** for these weights (no validation results were given '
                'at export). Validate them with timm\'s `validate.py` and export again with `--results`.')
        if not compare:
            return note
    header = '| model | top-1 (%) | top-5 (%) | params (M) | GMACs | image size |\n|---|---|---|---|---|---|\n'
    rows = []
    if results is not None:
        size = results.get('img_size', stats.input_size[1])
        rows.append(f'| {model_label} (these weights) | {_fmt(results.get("top1"))} | {_fmt(results.get("top5"))} | '
                    f'{stats.params / 1e6:.2f} | {stats.macs / 1e9:.3f} | {size} |')
    for row in compare:
        rows.append(f'| {row["model"]} | {_fmt(row.get("top1"))} | {_fmt(row.get("top5"))} | '
                    f'{_fmt(row.get("param_count"))} | - | {row.get("img_size", "-")} |')
    table = header + '\n'.join(rows) + '\n\nAccuracy from timm `validate.py` results files; GMACs measured at export.'
    return table if results is not None else note + '\n\n' + table


def placeholders(text: str) -> List[str]:
    """Names of the ``{{ name }}`` placeholders left in ``text``."""
    return sorted(set(_PLACEHOLDER_RE.findall(text)))


def render_card(template: str, values: Mapping[str, Any]) -> str:
    """Fill every placeholder of ``template``; a missing value or a value never used is an error."""
    missing = [name for name in placeholders(template) if name not in values]
    if missing:
        raise CardError(f'The card template needs values for {missing}; they come from the export (a timm-mrap bug '
                        f'or a template with an unknown placeholder).')
    unused = sorted(set(values) - set(placeholders(template)))
    if unused:
        raise CardError(f'The card template does not use {unused}; every card shows the same measured facts.')
    text = _PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), template)
    left = placeholders(text)
    if left:
        raise CardError(f'Values for the card contain placeholders {left}.')
    return text


def card_values(
        *,
        model_name: str,
        repo_id: str,
        create_name: str,
        stats: ModelStats,
        num_classes: int,
        dataset: str,
        dataset_id: str,
        license: str,
        weights_source: str,
        results: Optional[Dict[str, Any]] = None,
        compare: Sequence[Dict[str, Any]] = (),
) -> Dict[str, str]:
    """The values every card template takes, all measured or given at export."""
    shapes = '\n'.join(f'    # {tuple(s)}' for s in stats.feature_shapes)
    if results is not None:
        accuracy = f'top-1 {results["top1"]:.2f} %, top-5 {_fmt(results.get("top5"))} %'
        if 'img_size' in results:
            accuracy += f' at {results["img_size"]} px'
    else:
        accuracy = 'not yet measured'
    return {
        'model_name': model_name,
        'repo_id': repo_id,
        'create_name': create_name,
        'license': license,
        'dataset': dataset,
        'dataset_id': dataset_id,
        'num_classes': str(num_classes),
        'params_m': f'{stats.params / 1e6:.2f}',
        'params': f'{stats.params:,}',
        'gmacs': f'{stats.macs / 1e9:.3f}',
        'macs_counter': MAC_COUNTER,
        'image_size': stats.image_size,
        'accuracy': accuracy,
        'weights_source': weights_source,
        'feature_shapes': shapes,
        'unpooled_shape': str(tuple(stats.unpooled_shape)),
        'embedding_shape': str(tuple(stats.embedding_shape)),
        'comparison': comparison_section(model_name, stats, results, compare),
    }

