""" A clear error for ``pretrained=True`` when a tag's weights are not on the Hub (or not in the offline cache)

timm loads our default tags from their Hugging Face Hub repos (``timm-mrap/<architecture>.<tag>``). Until a tag is
published, huggingface_hub answers with a repository / entry not found error, or, with ``HF_HUB_OFFLINE=1``, a
cache miss; neither says what to do. ``explain_unpublished_weights`` wraps a model entrypoint and re-raises those
errors as ``WeightsNotPublishedError``, naming the repo and pointing to training and conversion (for the
``in1k_backbone`` tags, which load timm's own ``timm/`` repos, it says how to get those instead). Every other path
(``local-dir:``, ``hf-hub:``, ``pretrained_cfg_overlay=dict(file=...)``, ``pretrained=False``) is timm's own and
is untouched.
"""
import functools
from typing import Any, Callable, TypeVar

from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, \
    RevisionNotFoundError

from ..errors import WeightsNotPublishedError

__all__ = ['WeightsNotPublishedError', 'explain_unpublished_weights', 'unpublished_weights_message']

EntrypointT = TypeVar('EntrypointT', bound=Callable[..., Any])

_HUB_MISSES = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)


def unpublished_weights_message(model_name: str, hub_id: str, error: BaseException) -> str:
    """What went wrong and what to do, for a Hub miss ``error`` while loading ``model_name`` from ``hub_id``."""
    if isinstance(error, LocalEntryNotFoundError):
        reason = ('they are not in the local Hub cache and the Hub could not be asked (offline: HF_HUB_OFFLINE=1, '
                  'or no connection); either this tag is not published yet or it was never downloaded here')
    elif isinstance(error, RepositoryNotFoundError):
        reason = 'the Hub has no such repository: the weights for this tag are not published yet'
    elif isinstance(error, RevisionNotFoundError):
        reason = 'the repository has no such revision: the weights for this revision are not published yet'
    else:
        reason = 'the repository has no weights file (model.safetensors): the weights are not published yet'
    architecture = model_name.split('.')[0]
    if hub_id.startswith('timm/'):
        where = ('they are not in the local Hub cache and the Hub could not be asked (HF_HUB_OFFLINE=1 or no '
                 'connection)' if isinstance(error, LocalEntryNotFoundError) else 'the Hub did not have them')
        return (
            f'No pretrained weights for {model_name}: this tag loads timm\'s own ImageNet-1k weights from Hugging '
            f'Face Hub repo {hub_id!r}, and {where} ({type(error).__name__}). Download them once with a connection '
            f'(or copy that repo into the Hub cache, HF_HUB_CACHE), or use pretrained=False for random '
            f'initialisation.')
    return (
        f'No pretrained weights for {model_name} at Hugging Face Hub repo {hub_id!r}: {reason} '
        f'({type(error).__name__}). Train them (./train.sh {architecture} DATA_DIR ..., see docs/training.md), '
        f'or convert the authors\' checkpoint '
        f'(python -m timm_mrap.convert CKPT --model {architecture} --out DIR), then load the folder with '
        f"timm.create_model('local-dir:DIR', pretrained=True) or publish it (python -m timm_mrap.hub prepare / push). "
        f'Use pretrained=False for random initialisation.')


def _resolve_hub_id(variant: str, kwargs: dict) -> tuple:
    """The ``(architecture.tag, hf_hub_id)`` that timm resolves for this call (only used to word the error)."""
    from timm.models import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get('pretrained_cfg'),
        pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
    )
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    return name, cfg.hf_hub_id or '?'


def explain_unpublished_weights(entrypoint: EntrypointT) -> EntrypointT:
    """Wrap a model entrypoint so Hub misses under ``pretrained=True`` raise ``WeightsNotPublishedError``.

    Place it under ``@register_model`` (the wrapper keeps the entrypoint's name, module and docstring).
    """
    @functools.wraps(entrypoint)
    def _entrypoint(pretrained: bool = False, **kwargs):
        try:
            return entrypoint(pretrained=pretrained, **kwargs)
        except _HUB_MISSES as e:
            if not pretrained:
                raise
            name, hub_id = _resolve_hub_id(entrypoint.__name__, kwargs)
            raise WeightsNotPublishedError(unpublished_weights_message(name, hub_id, e)) from e

    return _entrypoint  # type: ignore[return-value]
