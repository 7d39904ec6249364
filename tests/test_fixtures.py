"""The fixtures in tests/fixtures: complete as the tests read them, and unchanged from their source where it is at hand.

The source is the shared folder beside the project root (``../shared/fixtures/reference``, ``../shared/datasets``).
A clone without it runs everything here except the comparison with the source, which is skipped.
"""
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
from safetensors import safe_open

from conftest import FIXTURES_DIR, ROOT, load_script

SHARED = ROOT.parent / 'shared'
SOURCE_REFERENCE = SHARED / 'fixtures' / 'reference'
SOURCE_CLASS_LISTS = SHARED / 'datasets'
REFERENCE = FIXTURES_DIR / 'reference'
CLASS_LISTS = FIXTURES_DIR / 'class_lists'
FIXTURE_NAMES = sorted(p.stem for p in REFERENCE.glob('*.safetensors'))
NETWORK_KEYS = {'input', 'logits'}
MODULE_KEYS = {'input', 'output_eval', 'output_train', 'probe', 'grad_input_train'}


def _slim_script():
    return load_script(FIXTURES_DIR / 'slim_reference.py')


def _read(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors as stored (no dtype cast) and metadata."""
    with safe_open(str(path), 'pt') as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).contiguous().view(torch.uint8)


def _require_source(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f'{folder} is not beside the project root; nothing to compare the fixture copies with')


def test_every_fixture_the_tests_load_is_present():
    assert len(FIXTURE_NAMES) == 13, FIXTURE_NAMES
    for arch in ('mobilenetv1', 'mobilenetv2', 'mobilenetv3'):
        for attn in ('mrap', 'mafc'):
            assert f'{arch}_{attn}_reference' in FIXTURE_NAMES
    assert sorted(p.name for p in CLASS_LISTS.glob('*.txt')) == ['cmc_imagenet100_classes.txt', 'rein100_classes.txt']


@pytest.mark.parametrize('name', FIXTURE_NAMES)
def test_fixture_holds_what_the_tests_read(name):
    tensors, meta = _read(REFERENCE / f'{name}.safetensors')
    assert not set(tensors) & _slim_script().DROPPED
    assert any(k.startswith('state_dict.') for k in tensors)
    if meta['kind'] == 'network':
        assert NETWORK_KEYS <= set(tensors) and meta['arch'] == name[:-len('_reference')]
    else:
        assert MODULE_KEYS <= set(tensors) and any(k.startswith('grad.') for k in tensors)


@pytest.mark.parametrize('name', FIXTURE_NAMES)
def test_fixture_is_bit_identical_to_its_source(name):
    """Kept tensors equal the source in dtype, shape and bytes; metadata equal; only DROPPED tensors are left out."""
    _require_source(SOURCE_REFERENCE)
    ours, our_meta = _read(REFERENCE / f'{name}.safetensors')
    theirs, their_meta = _read(SOURCE_REFERENCE / f'{name}.safetensors')
    assert our_meta == their_meta
    assert set(ours) <= set(theirs) and set(theirs) - set(ours) <= _slim_script().DROPPED
    for k, v in ours.items():
        ref = theirs[k]
        assert v.dtype == ref.dtype and v.shape == ref.shape, k
        assert _bytes(v).equal(_bytes(ref)), f'{name}: {k} differs'


def test_every_source_fixture_has_a_copy():
    _require_source(SOURCE_REFERENCE)
    assert FIXTURE_NAMES == sorted(p.stem for p in SOURCE_REFERENCE.glob('*.safetensors'))


def test_class_lists_equal_their_source():
    _require_source(SOURCE_CLASS_LISTS)
    source = sorted(SOURCE_CLASS_LISTS.glob('*.txt'))
    assert [p.name for p in source] == sorted(p.name for p in CLASS_LISTS.glob('*.txt'))
    for p in source:
        assert (CLASS_LISTS / p.name).read_bytes() == p.read_bytes(), p.name
