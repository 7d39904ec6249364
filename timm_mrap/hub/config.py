""" config.json in timm's Hub shape: top-level classes, ``model_args`` for architecture arguments only

timm's ``save_for_hf`` writes ``config.json`` with the current ``num_classes``, ``in_chans`` and ``global_pool`` in
``model_args`` too, beside every argument ``create_model`` was given. Clients that pass the classes themselves
together with ``model_args`` (transformers' ``TimmWrapper``: ``create_model(architecture, num_classes=...,
**model_args)``) then fail with "got multiple values for keyword argument 'num_classes'". The Hub folders written here
keep ``num_classes`` top-level only, ``in_chans`` / ``global_pool`` only where they differ from the models' defaults,
and never a runtime choice (``mrap_impl``: which kernels run, not what they compute). timm loads folders of both
shapes.
"""
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch import nn

from timm.models import save_for_hf

__all__ = ['RUNTIME_ARGS', 'architecture_args', 'tidy_config', 'save_hub_folder']

# create_model arguments that pick how the model runs, not what it computes
RUNTIME_ARGS = ('mrap_impl',)
# arguments config.json holds elsewhere (num_classes top-level, channels in pretrained_cfg's input_size), with the
# value every registered model takes when they are not given; None: never in model_args
_TOP_LEVEL_DEFAULTS = {'num_classes': None, 'in_chans': 3, 'global_pool': 'avg'}


def architecture_args(model_args: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """The ``model_args`` that change the architecture, and the names of those dropped.

    Dropped: runtime choices, ``num_classes``, and ``in_chans`` / ``global_pool`` at their defaults.
    """
    kept, dropped = {}, []
    for key, value in model_args.items():
        top_level = key in _TOP_LEVEL_DEFAULTS and (
            _TOP_LEVEL_DEFAULTS[key] is None or value == _TOP_LEVEL_DEFAULTS[key])
        if key in RUNTIME_ARGS or top_level:
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def tidy_config(path: Union[str, Path]) -> List[str]:
    """Rewrite a ``config.json`` in timm's shape (see ``architecture_args``); the dropped keys, [] if none."""
    path = Path(path)
    config = json.loads(path.read_text())
    kept, dropped = architecture_args(config.get('model_args') or {})
    if dropped:
        if kept:
            config['model_args'] = kept
        else:
            config.pop('model_args', None)
        with path.open('w') as f:
            json.dump(config, f, indent=2)  # as timm's save_config_for_hf writes it
    return dropped


def save_hub_folder(
        model: nn.Module,
        out_dir: Union[str, Path],
        model_config: Optional[Dict[str, Any]] = None,
        data_config: Optional[Dict[str, Any]] = None,
) -> None:
    """timm's ``save_for_hf`` (``model.safetensors`` + ``config.json``), with ``config.json`` in timm's shape."""
    save_for_hf(model, str(out_dir), model_config=model_config, safe_serialization=True, data_config=data_config)
    tidy_config(Path(out_dir) / 'config.json')
