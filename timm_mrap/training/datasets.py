""" Data tools: the digits demo set, ImageNet-100 and Stanford Dogs as timm ImageFolder trees

``<root>/<split>/<class>/<image>``: ImageNet-100 and Stanford Dogs as symbolic links to the original images, the
digits written once from scikit-learn's bundled copy. ImageNet-100 class lists (``class_lists/``): ``rein100``, the
authors' ReIN100 subset (from their MIT-licensed ImageNetPlaces365 repository), and ``cmc``, the CMC subset.
Usage: docs/training.md, or ``python -m timm_mrap.training.datasets --help``.
"""
import argparse
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DatasetError

__all__ = [
    'DatasetError', 'CLASS_LISTS', 'read_class_list', 'write_digits_imagefolder', 'build_imagenet100',
    'read_split_list', 'build_stanford_dogs',
]

CLASS_LISTS = {
    'rein100': 'rein100_classes.txt',
    'cmc': 'cmc_imagenet100_classes.txt',
}
_DIGITS_MARKER = '.timm_mrap_digits'
_IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.JPEG', '.JPG', '.PNG')


def _check_dst(dst: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``dst``; with ``overwrite``, clear it only if it holds nothing but links and folders."""
    if not dst.exists() or not any(dst.iterdir()):
        return
    if not overwrite:
        raise DatasetError(f'{dst} exists and is not empty; choose another destination or pass --overwrite.')
    for root, dirs, files in os.walk(dst):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            if not os.path.islink(os.path.join(root, name)):
                raise DatasetError(
                    f'--overwrite refused: {os.path.join(root, name)} is a real file, not a link this tool made; '
                    f'remove {dst} yourself if you mean it.')
    shutil.rmtree(dst)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.abspath(target), link)


def write_digits_imagefolder(root: str, holdout: int = 360, size: int = 32, seed: int = 0) -> Dict[str, int]:
    """Write scikit-learn's digits (1,797 8 x 8 images) as ``size`` px PNGs in ``<root>/train|validation/<digit>/``,
    a class-stratified hold-out of ``holdout`` images; the number of images per split. A complete tree is reused."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root)
    marker = root / _DIGITS_MARKER
    if marker.is_file():
        counts = {s: sum(1 for _ in (root / s).glob('*/*.png')) for s in ('train', 'validation')}
        if sum(counts.values()) == 1797:
            return counts
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise DatasetError(f'{root} exists, is not empty and is not a digits tree written by this tool; '
                           f'choose another folder.')
    digits = load_digits()
    images = (digits.images * (255. / 16.)).round().astype(np.uint8)
    idx_train, idx_val = train_test_split(
        np.arange(len(images)), test_size=holdout, stratify=digits.target, random_state=seed)
    tmp = root.with_name(root.name + '.partial')
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for split, indices in (('train', idx_train), ('validation', idx_val)):
        for i in sorted(indices):
            folder = tmp / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode='L').resize((size, size), Image.BICUBIC).save(folder / f'{i:04d}.png')
        counts[split] = len(indices)
    (tmp / _DIGITS_MARKER).write_text(f'sklearn digits, holdout={holdout}, size={size}, seed={seed}\n')
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return counts


def read_class_list(classes: str) -> List[str]:
    """WordNet ids of a class list: a packaged name (``rein100``, ``cmc``) or a text file, one id per line."""
    if classes in CLASS_LISTS:
        text = (resources.files('timm_mrap.training') / 'class_lists' / CLASS_LISTS[classes]).read_text()
    elif Path(classes).is_file():
        text = Path(classes).read_text()
    else:
        raise DatasetError(f'Unknown class list {classes!r}: use one of {sorted(CLASS_LISTS)} or a text file '
                           f'with one WordNet id (n01440764) per line.')
    wnids = [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith('#')]
    if len(set(wnids)) != len(wnids):
        raise DatasetError(f'Class list {classes} repeats ids.')
    return wnids


def build_imagenet100(src: str, dst: str, classes: str = 'rein100', splits: Optional[Sequence[str]] = None,
                      overwrite: bool = False) -> Dict[str, int]:
    """Link ``dst/<split>/<wnid>`` to the class folders ``src/<split>/<wnid>`` of an ImageNet-1k tree.

    ``classes`` is ``rein100``, ``cmc`` or a file of WordNet ids; ``splits`` default to those of ``train``, ``val``,
    ``validation`` found in ``src``; ``overwrite`` replaces a ``dst`` this tool built. Returns classes per split.
    """
    src, dst = Path(src), Path(dst)
    wnids = read_class_list(classes)
    if not src.is_dir():
        raise DatasetError(f'ImageNet folder {src} does not exist; pass the root that holds train/ and val/.')
    if splits is None:
        splits = [s for s in ('train', 'val', 'validation') if (src / s).is_dir()]
        if not splits:
            raise DatasetError(f'{src} has no train/, val/ or validation/ folder; pass the ImageNet-1k root '
                               f'(the folder with train/<wnid>/ class folders).')
    for split in splits:
        missing = [w for w in wnids if not (src / split / w).is_dir()]
        if missing:
            flat = (src / split).is_dir() and any(p.suffix in _IMAGE_EXTS for p in (src / split).iterdir())
            hint = (f' {src / split} holds images directly: sort the validation images into <wnid>/ class folders '
                    f'first (e.g. with the usual valprep.sh script).' if flat else '')
            raise DatasetError(f'{src / split} lacks {len(missing)} of the {len(wnids)} classes, e.g. '
                               f'{missing[:5]}.{hint}')
    _check_dst(dst, overwrite)
    for split in splits:
        for wnid in wnids:
            _link(src / split / wnid, dst / split / wnid)
    return {split: len(wnids) for split in splits}


def read_split_list(path: str) -> List[str]:
    """Relative image paths (``n02085620-Chihuahua/n02085620_10074.jpg``) of an official split list.

    Accepts the official ``train_list.mat`` / ``test_list.mat`` (``file_list`` cell array) or a text file with one
    path per line (anything after the first whitespace, e.g. a label, is ignored).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f'Split list {path} does not exist.')
    if path.suffix == '.mat':
        import numpy as np
        from scipy.io import loadmat
        mat = loadmat(str(path), squeeze_me=True)  # a cell array of one-string cells becomes an array of strings
        if 'file_list' not in mat:
            raise DatasetError(f'{path} has no file_list entry; is it the official train_list.mat / test_list.mat?')
        return [str(f) for f in np.atleast_1d(mat['file_list'])]
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith('#')]


def _find_list(src: Path, name: str) -> Path:
    for folder in (src, src / 'lists', src.parent, src.parent / 'lists'):
        for ext in ('.mat', '.txt'):
            if (folder / (name + ext)).is_file():
                return folder / (name + ext)
    raise DatasetError(f'Could not find {name}.mat (or .txt) in {src}, {src}/lists or the parent folder; pass '
                       f'--{name.replace("_", "-")} (the official lists are in lists.tar of the Stanford Dogs site).')


def build_stanford_dogs(src: str, dst: str, train_list: Optional[str] = None, test_list: Optional[str] = None,
                        overwrite: bool = False) -> Dict[str, Tuple[int, int]]:
    """Link ``dst/train|test/<wnid>-<breed>/<image>.jpg`` to the images of the official lists (``.mat`` / ``.txt``,
    searched next to ``src`` when None); ``src`` is ``Images/`` or its parent. Returns (images, classes) per split."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DatasetError(f'Stanford Dogs folder {src} does not exist; pass the Images/ folder of images.tar.')
    images = src / 'Images' if (src / 'Images').is_dir() else src
    lists = {'train': Path(train_list) if train_list else _find_list(src, 'train_list'),
             'test': Path(test_list) if test_list else _find_list(src, 'test_list')}
    files = {split: read_split_list(str(p)) for split, p in lists.items()}
    overlap = set(files['train']) & set(files['test'])
    if overlap:
        raise DatasetError(f'The train and test lists share {len(overlap)} images, e.g. {sorted(overlap)[:3]}.')
    for split, names in files.items():
        missing = [n for n in names if not (images / n).is_file()]
        if missing:
            raise DatasetError(f'{len(missing)} of the {len(names)} {split} images are not in {images}, e.g. '
                               f'{missing[:3]}; pass the Images/ folder that the lists refer to.')
    _check_dst(dst, overwrite)
    counts = {}
    for split, names in files.items():
        for name in names:
            _link(images / name, dst / split / name)
        counts[split] = (len(names), len({Path(n).parent.as_posix() for n in names}))
    return counts


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m timm_mrap.training.datasets',
                                     description=__doc__.splitlines()[0].strip())
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('digits', help="scikit-learn's digits as an ImageFolder (the train.sh demo data)")
    p.add_argument('dst')
    p.add_argument('--holdout', type=int, default=360, help='validation images (default: 360)')
    p.add_argument('--size', type=int, default=32, help='PNG size in px (default: 32)')
    p = sub.add_parser('imagenet100', help='ImageNet-100 (ReIN100 or CMC) as symlinks into ImageNet-1k')
    p.add_argument('src', help='ImageNet-1k root with train/<wnid>/ and val/<wnid>/')
    p.add_argument('dst')
    p.add_argument('--classes', default='rein100', help='rein100 (default), cmc, or a file of WordNet ids')
    p.add_argument('--splits', nargs='+', default=None, help='split folders (default: those found)')
    p.add_argument('--overwrite', action='store_true', help='replace a destination built earlier by this tool')
    p = sub.add_parser('stanford-dogs', help='Stanford Dogs train/test from the official lists, as symlinks')
    p.add_argument('src', help='the Images/ folder, or the folder holding Images/ and the lists')
    p.add_argument('dst')
    p.add_argument('--train-list', default=None, help='train_list.mat or .txt (default: found next to src)')
    p.add_argument('--test-list', default=None, help='test_list.mat or .txt (default: found next to src)')
    p.add_argument('--overwrite', action='store_true', help='replace a destination built earlier by this tool')
    args = parser.parse_args(argv)
    try:
        if args.command == 'digits':
            counts = write_digits_imagefolder(args.dst, holdout=args.holdout, size=args.size)
        elif args.command == 'imagenet100':
            counts = build_imagenet100(args.src, args.dst, args.classes, args.splits, args.overwrite)
        else:
            counts = build_stanford_dogs(args.src, args.dst, args.train_list, args.test_list, args.overwrite)
    except DatasetError as e:
        parser.exit(2, f'error: {e}\n')
    print(f'Wrote {args.dst}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))


if __name__ == '__main__':
    main()
