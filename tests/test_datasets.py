"""Data tools: the digits demo set, ImageNet-100 and Stanford Dogs symlink trees (on fake trees of tiny PNGs)."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from timm.data import create_dataset

from timm_mrap.training.datasets import (
    DatasetError, build_imagenet100, build_stanford_dogs, main, read_class_list, read_split_list,
    write_digits_imagefolder,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_LISTS = ROOT / 'tests' / 'fixtures' / 'class_lists'  # copies of the published lists
# a relative path with at least one folder, naming a text, recipe, Markdown or Python file (URLs are removed first)
_QUOTED_PATH = re.compile(r'(?<![\w/.-])[\w.-]+(?:/[\w.-]+)+\.(?:txt|yaml|md|py)\b')
_URL = re.compile(r'[a-z][a-z0-9+.-]*://\S+', re.I)


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _all_files(root: Path):
    return [Path(r) / f for r, _, files in os.walk(root) for f in files]


def test_digits_imagefolder(tmp_path):
    root = tmp_path / 'digits'
    counts = write_digits_imagefolder(str(root))
    assert counts == {'train': 1437, 'validation': 360}
    for split, n in counts.items():
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == [str(d) for d in range(10)]
        per_class = [len(list((root / split / c).glob('*.png'))) for c in classes]
        assert sum(per_class) == n
        if split == 'validation':  # stratified hold-out: 36 +- 2 of each digit
            assert min(per_class) >= 34 and max(per_class) <= 38
    train_ids = {p.name for p in (root / 'train').glob('*/*.png')}
    assert not train_ids & {p.name for p in (root / 'validation').glob('*/*.png')}
    img = Image.open(next((root / 'validation' / '3').glob('*.png')))
    assert img.size == (32, 32) and img.mode == 'L' and np.asarray(img).max() > 200
    # timm reads it as a 10-class ImageFolder
    assert len(create_dataset('', root=str(root), split='validation').reader.class_to_idx) == 10

    stamp = next((root / 'train' / '0').glob('*.png')).stat().st_mtime_ns
    assert write_digits_imagefolder(str(root)) == counts  # reused, not rewritten
    assert next((root / 'train' / '0').glob('*.png')).stat().st_mtime_ns == stamp
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'thesis.tex').write_text('mine')
    with pytest.raises(DatasetError, match='not a digits tree'):
        write_digits_imagefolder(str(tmp_path / 'busy'))


def test_packaged_class_lists_match_the_fixtures():
    for name, file in (('rein100', 'rein100_classes.txt'), ('cmc', 'cmc_imagenet100_classes.txt')):
        wnids = read_class_list(name)
        assert len(wnids) == 100 and len(set(wnids)) == 100 and all(w.startswith('n') for w in wnids)
        assert wnids == (FIXTURE_LISTS / file).read_text().split()
    assert read_class_list('rein100') != read_class_list('cmc')
    with pytest.raises(DatasetError, match="use one of \\['cmc', 'rein100'\\]"):
        read_class_list('imagenet200')


def test_paths_quoted_for_card_readers_exist():
    """Model cards and the Hub code (tag datasets, card facts, the template) cite files by their source-tree path."""
    sources = [*sorted((ROOT / 'timm_mrap' / 'hub').glob('*.py')), *sorted((ROOT / 'timm_mrap' / 'hub').glob('*.md')),
               *sorted((ROOT / 'hf_cards').glob('*.md'))]
    assert ROOT / 'timm_mrap' / 'hub' / 'card_template.md' in sources
    quoted = {(src.relative_to(ROOT).as_posix(), path)
              for src in sources for path in _QUOTED_PATH.findall(_URL.sub('', src.read_text(encoding='utf-8')))}
    # the rein100 tag's card names its packaged class list (and shows the pattern finds paths at all)
    assert 'timm_mrap/training/class_lists/rein100_classes.txt' in {path for _, path in quoted}
    missing = sorted(f'{src}: {path}' for src, path in quoted if not (ROOT / path).is_file())
    assert not missing, f'paths that are not files in the source tree: {missing}'


def test_imagenet100_symlinks(tmp_path):
    wnids = read_class_list('cmc')[:3]
    src = tmp_path / 'imagenet'
    for split, per_class in (('train', 3), ('val', 2)):
        for i, wnid in enumerate(wnids + ['n99999999']):  # one class that is not in the list
            for j in range(per_class):
                _png(src / split / wnid / f'{wnid}_{j}.JPEG', value=10 * i)
    class_file = tmp_path / 'three.txt'
    class_file.write_text('# three classes\n' + '\n'.join(wnids) + '\n')
    dst = tmp_path / 'imagenet3'
    assert build_imagenet100(str(src), str(dst), str(class_file)) == {'train': 3, 'val': 3}
    for split in ('train', 'val'):
        assert sorted(p.name for p in (dst / split).iterdir()) == sorted(wnids)
        for wnid in wnids:
            assert (dst / split / wnid).is_symlink()
            assert (dst / split / wnid).resolve() == (src / split / wnid).resolve()
    assert not [p for p in _all_files(dst) if not p.parent.is_symlink()]  # nothing copied
    ds = create_dataset('', root=str(dst), split='validation')  # timm follows the links; val is found for validation
    assert len(ds) == 6 and sorted(ds.reader.class_to_idx) == sorted(wnids)

    with pytest.raises(DatasetError, match='not empty.*--overwrite'):
        build_imagenet100(str(src), str(dst), str(class_file))
    assert build_imagenet100(str(src), str(dst), str(class_file), splits=['train'], overwrite=True) == {'train': 3}
    assert not (dst / 'val').exists()
    (dst / 'notes.txt').write_text('a real file')
    with pytest.raises(DatasetError, match='real file'):
        build_imagenet100(str(src), str(dst), str(class_file), overwrite=True)

    with pytest.raises(DatasetError, match='lacks 97 of the 100 classes'):
        build_imagenet100(str(src), str(tmp_path / 'cmc'), 'cmc')
    flat = tmp_path / 'flat'
    for wnid in wnids:
        _png(flat / 'train' / wnid / 'a.JPEG')
    _png(flat / 'val' / 'ILSVRC2012_val_00000001.JPEG')
    with pytest.raises(DatasetError, match='holds images directly.*class folders'):
        build_imagenet100(str(flat), str(tmp_path / 'x'), str(class_file))
    with pytest.raises(DatasetError, match='does not exist'):
        build_imagenet100(str(tmp_path / 'nope'), str(tmp_path / 'y'), 'rein100')


def _dogs_tree(tmp_path: Path):
    from scipy.io import savemat
    images = tmp_path / 'dogs' / 'Images'
    breeds = ['n02085620-Chihuahua', 'n02085782-Japanese_spaniel']
    files = [f'{b}/{b.split("-")[0]}_{i}.jpg' for b in breeds for i in range(3)]
    for f in files:
        _png(images / f)
    train, test = [f for f in files if not f.endswith('_2.jpg')], [f for f in files if f.endswith('_2.jpg')]
    lists = tmp_path / 'dogs' / 'lists'
    lists.mkdir()
    cell = np.empty((len(train), 1), dtype=object)  # MATLAB cell array, as in the official train_list.mat
    for i, f in enumerate(train):
        cell[i, 0] = np.array([f])
    savemat(lists / 'train_list.mat', {'file_list': cell, 'labels': np.array([[1], [1], [2], [2]])})
    (lists / 'test_list.txt').write_text(''.join(f'{f} {1 + (i >= 1)}\n' for i, f in enumerate(test)))
    return tmp_path / 'dogs', train, test


def test_stanford_dogs(tmp_path, capsys):
    src, train, test = _dogs_tree(tmp_path)
    assert read_split_list(str(src / 'lists' / 'train_list.mat')) == train
    assert read_split_list(str(src / 'lists' / 'test_list.txt')) == test
    dst = tmp_path / 'dogs_folders'
    main(['stanford-dogs', str(src), str(dst)])  # lists found next to the images
    assert 'train (4, 2), test (2, 2)' in capsys.readouterr().out
    for split, names in (('train', train), ('test', test)):
        for name in names:
            assert (dst / split / name).is_symlink()
            assert (dst / split / name).resolve() == (src / 'Images' / name).resolve()
    assert len(create_dataset('', root=str(dst), split='test')) == 2

    with pytest.raises(DatasetError, match='share 4 images'):
        build_stanford_dogs(str(src / 'Images'), str(tmp_path / 'o'), str(src / 'lists' / 'train_list.mat'),
                            str(src / 'lists' / 'train_list.mat'))
    bad = tmp_path / 'bad.txt'
    bad.write_text('n02085620-Chihuahua/missing.jpg\n')
    with pytest.raises(DatasetError, match='1 of the 1 test images are not in'):
        build_stanford_dogs(str(src), str(tmp_path / 'o'), test_list=str(bad))
    with pytest.raises(SystemExit):
        main(['stanford-dogs', str(tmp_path / 'none'), str(tmp_path / 'o')])
    assert 'does not exist' in capsys.readouterr().err
