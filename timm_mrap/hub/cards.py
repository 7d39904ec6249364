""" Model cards: one template (``card_template.md``) for every architecture, filled with its facts (``card_facts.py``)
and with numbers measured when a Hub folder is prepared; accuracy comes from timm ``validate.py`` results files only."""
import csv
import json
import re
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checkpoint import PathLike
from ..complexity import MAC_COUNTER, count_macs, count_params
from ..errors import CardError
from ..version import __version__
from .card_facts import ATTENTIONS, BACKBONES, CARD_FACTS

__all__ = [
    'FACT_KEYS', 'ModelStats', 'CardError', 'card_template', 'architecture_card', 'card_source', 'write_cards',
    'stale_cards', 'measure_model', 'read_results', 'comparison_section', 'render_card', 'placeholders', 'card_values',
]

# placeholders filled from card_facts.py (the rest are filled when a Hub folder is prepared)
FACT_KEYS = ('architecture', 'attention_tag', 'description', 'papers', 'original', 'warm_start')

_PLACEHOLDER_RE = re.compile(r'{{\s*(\w+)\s*}}')
_WRAP = dict(width=120, break_long_words=False, break_on_hyphens=False)


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


def card_template() -> str:
    """The card template shared by every architecture (``timm_mrap/hub/card_template.md``)."""
    return (resources.files(__package__) / 'card_template.md').read_text(encoding='utf-8')


def _warm_start(architecture: str) -> str:
    """The paragraph on the ``in1k_backbone`` tag, for architectures that have one (else empty)."""
    from ..models.warm_start import BACKBONE_TAG, TIMM_BACKBONES
    if architecture not in TIMM_BACKBONES:
        return ''
    text = (f'To fine-tune from ImageNet instead, the `{architecture}.{BACKBONE_TAG}` tag loads timm\'s ImageNet-1k '
            f'weights of `{TIMM_BACKBONES[architecture]}` into this architecture. That is an ImageNet backbone with '
            f'**untrained attention**, meant for fine-tuning; it is not the paper\'s weights and has no accuracy of '
            f'its own (`timm.create_model(\'{architecture}.{BACKBONE_TAG}\', pretrained=True, num_classes=10)`).')
    return '\n' + textwrap.fill(text, **_WRAP) + '\n'


def architecture_card(architecture: str, template: Optional[str] = None) -> str:
    """``template`` (default: the packaged one) with the ``FACT_KEYS`` of ``architecture`` filled in."""
    if architecture not in CARD_FACTS:
        raise CardError(f'No card facts for {architecture!r}; add a CARD_FACTS entry in timm_mrap/hub/card_facts.py '
                        f'(known: {sorted(CARD_FACTS)}).')
    template = card_template() if template is None else template
    facts = CARD_FACTS[architecture]
    attention, backbone = ATTENTIONS[facts.attention], BACKBONES[facts.backbone]
    description = (f'{backbone.about} with {attention.name} {facts.placement}: {facts.topology}. '
                   f'Attention: {attention.about}')
    values = dict(architecture=architecture, warm_start=_warm_start(architecture), attention_tag=facts.attention,
                  description=textwrap.fill(description, **_WRAP), original=attention.original,
                  papers='\n'.join(f'  - {paper}' for paper in (*attention.papers, backbone.paper)))
    missing = [key for key in FACT_KEYS if key not in placeholders(template)]
    if missing:
        raise CardError(f'The card template has no {missing} placeholders; every card states these facts.')
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def card_source(architecture: str, card_dir: Optional[PathLike] = None) -> str:
    """The card to render for a Hub folder: ``<card_dir>/<architecture>.md`` when given, else the packaged one."""
    if card_dir is None:
        return architecture_card(architecture)
    path = Path(card_dir) / f'{architecture}.md'
    if not path.is_file():
        raise CardError(f'No model card {path} for {architecture}; drop --card-dir to use the packaged template, or '
                        f'write the folder with python -m timm_mrap.hub cards {card_dir}.')
    return path.read_text(encoding='utf-8')


def write_cards(card_dir: PathLike) -> List[Path]:
    """Write ``<card_dir>/<architecture>.md`` for every architecture in ``CARD_FACTS``; returns the files."""
    Path(card_dir).mkdir(parents=True, exist_ok=True)
    paths = [Path(card_dir) / f'{architecture}.md' for architecture in sorted(CARD_FACTS)]
    for path in paths:
        path.write_text(architecture_card(path.stem), encoding='utf-8')
    return paths


def stale_cards(card_dir: PathLike) -> List[str]:
    """Cards in ``card_dir`` that differ from the packaged source, are missing, or belong to no architecture."""
    card_dir = Path(card_dir)
    stale = []
    for architecture in sorted(CARD_FACTS):
        path = card_dir / f'{architecture}.md'
        if not path.is_file():
            stale.append(f'{path} (missing)')
        elif path.read_text(encoding='utf-8') != architecture_card(architecture):
            stale.append(f'{path} (differs from card_template.md + card_facts.py)')
    extra = sorted(p.name for p in card_dir.glob('*.md') if p.stem not in CARD_FACTS and p.name != 'README.md')
    stale += [f'{card_dir / name} (no such architecture in card_facts.py)' for name in extra]
    return stale


@torch.no_grad()
def measure_model(model: nn.Module, input_size: Sequence[int]) -> ModelStats:
    """Count params and MACs and record the feature / embedding shapes of ``model`` (eval mode) for one image."""
    was_training = model.training
    try:
        unpooled, features = model.eval().forward_intermediates(torch.zeros(1, *input_size))
        embedding = model.forward_head(unpooled, pre_logits=True)
    finally:
        model.train(was_training)
    return ModelStats(params=count_params(model), macs=count_macs(model, input_size),
                      input_size=tuple(int(v) for v in input_size), unpooled_shape=tuple(unpooled.shape),
                      feature_shapes=tuple(tuple(f.shape) for f in features), embedding_shape=tuple(embedding.shape))


def read_results(path: PathLike) -> List[Dict[str, Any]]:
    """Rows of a timm ``validate.py`` results file (``--results-file`` JSON / CSV, or its stdout after ``--result``):
    ``model`` and ``top1``, and ``top5``, ``img_size``, ``param_count`` (M), ``crop_pct`` where given."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f'Results file {path} does not exist; pass the file validate.py wrote (--results-file).')
    text = path.read_text().split('--result', 1)[-1].strip()  # captured stdout: the JSON follows the marker line
    if text.startswith(('{', '[')):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise CardError(f'{path} is not valid JSON ({e}); pass validate.py\'s --results-file output.') from e
        rows = rows if isinstance(rows, list) else [rows]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    bad = [row for row in rows if not isinstance(row, dict) or 'top1' not in row or 'model' not in row
           or row.get('error')]
    if bad or not rows:
        raise CardError(f'{path}: {bad[:1] or "nothing"} is not a validate.py result (needs model and top1, no error).')
    kinds = {'top1': float, 'top5': float, 'param_count': float, 'crop_pct': float, 'img_size': int}
    return [{'model': str(row['model']), **{k: kinds[k](row[k]) for k in kinds if row.get(k) not in (None, '')}}
            for row in rows]


def _fmt(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.2f}'


def comparison_section(model_label: str, stats: ModelStats, results: Optional[Dict[str, Any]] = None,
                       compare: Sequence[Dict[str, Any]] = ()) -> str:
    """Markdown for Model Comparison: measured accuracy of this model (and others, same evaluation), or a note."""
    note = ('Top-1 / top-5 accuracy: **not yet measured** for these weights (no validation results were given when '
            'prepared). Validate them with timm\'s `validate.py` and prepare again with `--results`.')
    rows = [f'| {row["model"]} | {_fmt(row.get("top1"))} | {_fmt(row.get("top5"))} | {_fmt(row.get("param_count"))} | '
            f'- | {row.get("img_size", "-")} |' for row in compare]
    if results is not None:
        size = results.get('img_size', stats.input_size[1])
        rows.insert(0, f'| {model_label} (these weights) | {_fmt(results.get("top1"))} | {_fmt(results.get("top5"))} | '
                       f'{stats.params / 1e6:.2f} | {stats.macs / 1e9:.3f} | {size} |')
    if not rows:
        return note
    table = ('| model | top-1 (%) | top-5 (%) | params (M) | GMACs | image size |\n|---|---|---|---|---|---|\n'
             + '\n'.join(rows) + '\n\nAccuracy from timm `validate.py` results files; GMACs measured at export.')
    return table if results is not None else note + '\n\n' + table


def placeholders(text: str) -> List[str]:
    """Names of the ``{{ name }}`` placeholders left in ``text``."""
    return sorted(set(_PLACEHOLDER_RE.findall(text)))


def render_card(template: str, values: Mapping[str, Any]) -> str:
    """Fill every placeholder of ``template``; a missing value or a value never used is an error."""
    missing = [name for name in placeholders(template) if name not in values]
    if missing:
        raise CardError(f'The card template needs values for {missing}; they come from the folder writer (a timm-mrap '
                        f'bug or a template with an unknown placeholder).')
    unused = sorted(set(values) - set(placeholders(template)))
    if unused:
        raise CardError(f'The card template does not use {unused}; every card shows the same measured facts.')
    return _PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), template)


def card_values(*, model_name: str, repo_id: str, create_name: str, stats: ModelStats, num_classes: int, dataset: str,
                dataset_id: str, license: str, weights_source: str, results: Optional[Dict[str, Any]] = None,
                compare: Sequence[Dict[str, Any]] = ()) -> Dict[str, str]:
    """The values every card template takes, all measured or given when a Hub folder is prepared."""
    accuracy = 'not yet measured'
    if results is not None:
        accuracy = f'top-1 {results["top1"]:.2f} %, top-5 {_fmt(results.get("top5"))} %' + (
            f' at {results["img_size"]} px' if 'img_size' in results else '')
    return dict(
        model_name=model_name, repo_id=repo_id, create_name=create_name, license=license, dataset=dataset,
        dataset_id=dataset_id, num_classes=str(num_classes), params_m=f'{stats.params / 1e6:.2f}',
        params=f'{stats.params:,}', gmacs=f'{stats.macs / 1e9:.3f}', macs_counter=MAC_COUNTER,
        image_size=stats.image_size, accuracy=accuracy, weights_source=weights_source,
        feature_shapes='\n'.join(f'    # {tuple(s)}' for s in stats.feature_shapes),
        unpooled_shape=str(tuple(stats.unpooled_shape)), embedding_shape=str(tuple(stats.embedding_shape)),
        comparison=comparison_section(model_name, stats, results, compare), package_version=__version__,
    )

