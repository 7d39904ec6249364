""" Training recipes as timm ``--config`` YAML files (keys are the ``dest`` names of timm train.py's flags)

``recipe_path('rein100_paper')`` gives the file; ``train.sh MODEL DATA --recipe rein100_paper`` passes it as
``--config``. Flags given on the command line override the file (timm applies the file as parser defaults).
"""
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List

from ...errors import InputError

__all__ = ['list_recipes', 'recipe_path', 'read_config']


def list_recipes() -> List[str]:
    """Names of the packaged recipes."""
    return sorted(p.name[:-len('.yaml')] for p in resources.files(__name__).iterdir() if p.name.endswith('.yaml'))


def recipe_path(name: str) -> Path:
    """Path of a packaged recipe (``rein100_paper`` or ``rein100_paper.yaml``) or of an existing YAML file."""
    if Path(name).is_file():
        return Path(name)
    stem = name[:-len('.yaml')] if name.endswith('.yaml') else name
    path = Path(str(resources.files(__name__) / f'{stem}.yaml'))
    if not path.is_file():
        raise InputError(f'No recipe {name!r}: use a YAML file or one of {list_recipes()}.')
    return path


def read_config(path: str) -> Dict[str, Any]:
    """A timm ``--config`` YAML file as a dict of flag ``dest`` names (``-`` in a key read as ``_``) to values."""
    import yaml
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f'--config {path} could not be read ({e}); pass a timm YAML config file.') from e
    if not isinstance(cfg, dict):
        raise InputError(f'--config {path} must hold a mapping of timm flag names to values, not '
                         f'{type(cfg).__name__}.')
    return {k.replace('-', '_'): v for k, v in cfg.items()}
