""" ``pretrained=True`` for the registered tags: fail at once for weights that are not published, say why otherwise

A ``timm-mrap/`` repo not in ``PUBLISHED_REPOS`` is refused before any Hub request; other tags are fetched as timm
fetches them, a Hub miss re-raised as ``WeightsNotPublishedError`` naming the repo (``docs/hub.md``).
"""
import functools
from typing import Callable

from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, \
    RevisionNotFoundError
from timm.models import resolve_pretrained_cfg
from timm.models._builder import _resolve_pretrained_source

from ..errors import WeightsNotPublishedError

__all__ = ['PUBLISHED_REPOS', 'WeightsNotPublishedError', 'explain_unpublished_weights']

# this project's Hub repos that hold weights; any other timm-mrap/ repo is refused without asking the Hub
PUBLISHED_REPOS = frozenset()
_OWN_ORG = 'timm-mrap/'
_HUB_MISSES = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)


def _hub_source(variant: str, kwargs: dict) -> tuple:
    """``(architecture.tag, hub id)`` when timm would load this call's weights from the Hub, else ``(name, None)``."""
    cfg = resolve_pretrained_cfg(
        variant, kwargs.get('pretrained_cfg'), pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    load_from, location = _resolve_pretrained_source(cfg.to_dict())
    hub_id = location[0] if isinstance(location, tuple) else location
    return name, hub_id if load_from == 'hf-hub' and cfg.source != 'hf-hub' else None


def _how_to_get_weights(architecture: str) -> str:
    return (f"Train them (./train.sh {architecture} DATA_DIR ..., see docs/training.md) or convert the authors' "
            f'checkpoint (python -m timm_mrap.convert CKPT --model {architecture} --out DIR), then load the folder '
            f"with timm.create_model('local-dir:DIR', pretrained=True); pretrained=False for random initialisation.")


def explain_unpublished_weights(entrypoint: Callable) -> Callable:
    """Wrap a model entrypoint (under ``@register_model``) so ``pretrained=True`` fails clearly without weights."""
    @functools.wraps(entrypoint)
    def _entrypoint(pretrained: bool = False, **kwargs):
        if not pretrained:
            return entrypoint(pretrained=pretrained, **kwargs)
        name, hub_id = _hub_source(entrypoint.__name__, kwargs)
        if hub_id and hub_id.startswith(_OWN_ORG) and hub_id not in PUBLISHED_REPOS:
            raise WeightsNotPublishedError(
                f'No pretrained weights for {name}: Hugging Face Hub repo {hub_id!r} is not published yet (the Hub '
                f'was not asked). {_how_to_get_weights(entrypoint.__name__)}')
        try:
            return entrypoint(pretrained=pretrained, **kwargs)
        except _HUB_MISSES as e:
            where = (f'the Hub does not have them ({type(e).__name__})' if not isinstance(e, LocalEntryNotFoundError)
                     else 'they are not in the local Hub cache and the Hub could not be asked (HF_HUB_OFFLINE=1, no '
                          'connection)')
            fix = ('Download them once with a connection (or copy that repo into the Hub cache, HF_HUB_CACHE).'
                   if (hub_id or '').startswith('timm/') else _how_to_get_weights(entrypoint.__name__))
            raise WeightsNotPublishedError(
                f'No pretrained weights for {name} from Hugging Face Hub repo {hub_id or "?"!r}: {where}. {fix}') from e

    return _entrypoint
