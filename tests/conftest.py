"""Shared test helpers: the reference fixtures live in ../shared/fixtures/reference (read in place, never copied)."""
import json
import os
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get('TIMM_MRAP_FIXTURES', ROOT.parent / 'shared' / 'fixtures' / 'reference'))


def load_fixture(name: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors (float16 weights cast to float32) and metadata of ``<name>.safetensors``."""
    from safetensors import safe_open
    path = REFERENCE_DIR / f'{name}.safetensors'
    if not path.exists():
        pytest.fail(f'Reference fixture {path} is missing; the tests expect ../shared beside the project root.')
    with safe_open(str(path), 'pt') as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return tensors, meta


def fixture_state_dict(tensors: Dict[str, torch.Tensor], prefix: str = 'state_dict.') -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def fixture_json(meta: Dict[str, str], key: str):
    return json.loads(meta[key])


@pytest.fixture
def reference_dir() -> Path:
    return REFERENCE_DIR
