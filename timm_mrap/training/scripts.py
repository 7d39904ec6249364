""" Find timm's command-line scripts (train.py, validate.py, benchmark.py, ...), which timm's wheel does not ship

Looked up in ``TIMM_SCRIPTS_DIR`` (a timm checkout), then the per-user cache, then downloaded into the cache at the git
tag of the installed timm (``TIMM_SCRIPTS_URL``; ``TIMM_SCRIPTS_OFFLINE=1`` disables it); docs/training.md has the
details. Every failure raises :class:`ScriptNotFoundError` saying how to fix it.
"""
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import timm

from ..errors import ScriptNotFoundError

__all__ = ['ScriptNotFoundError', 'DEFAULT_SCRIPTS_URL', 'scripts_cache_dir', 'scripts_ref', 'download_script',
           'find_script']

DEFAULT_SCRIPTS_URL = 'https://raw.githubusercontent.com/huggingface/pytorch-image-models'
_SAFE_NAME = re.compile(r'^[A-Za-z0-9_.-]+\.py$')


def _is_offline() -> bool:
    return os.environ.get('TIMM_SCRIPTS_OFFLINE', '').lower() in ('1', 'true', 'yes', 'on')


def scripts_cache_dir() -> Path:
    """Per-user cache folder for the scripts of the installed timm version."""
    root = os.environ.get('TIMM_MRAP_CACHE_DIR')
    if not root:
        xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        root = os.path.join(xdg, 'timm_mrap')
    return Path(root) / 'scripts' / timm.__version__


def scripts_ref() -> str:
    """Git ref whose scripts match the installed timm: the release tag ``v<version>``, ``main`` for dev builds."""
    return 'main' if re.search(r'dev|\+', timm.__version__) else f'v{timm.__version__}'


def _how_to_fix(name: str) -> str:
    return (
        f'To fix it, do one of:\n'
        f'  - point TIMM_SCRIPTS_DIR at a timm checkout of the installed version:\n'
        f'      git clone --depth 1 --branch {scripts_ref()} https://github.com/huggingface/pytorch-image-models\n'
        f'      export TIMM_SCRIPTS_DIR=$PWD/pytorch-image-models\n'
        f'  - copy {name} from such a checkout into {scripts_cache_dir()}/ (e.g. on an offline machine)\n'
        f'  - use the built-in trainer / validator instead: python -m timm_mrap.training.builtin.train / '
        f'python -m timm_mrap.training.builtin.validate (train.sh / validate.sh fall back to them on their own).')


def download_script(name: str, dest_dir: Path, timeout: float = 20.) -> Path:
    """Download script ``name`` from ``$TIMM_SCRIPTS_URL`` (GitHub raw by default) at :func:`scripts_ref` into
    ``dest_dir``; a partial or non-Python file never appears under its name.

    Raises:
        ScriptNotFoundError: the address cannot be reached, has no such file, or serves something that is not Python.
    """
    base = (os.environ.get('TIMM_SCRIPTS_URL') or DEFAULT_SCRIPTS_URL).rstrip('/')
    url = f'{base}/{scripts_ref()}/{name}'
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except urllib.error.HTTPError as e:
        raise ScriptNotFoundError(
            f'Downloading {name} from {url} failed with HTTP {e.code}'
            f'{" (no such tag or file)" if e.code == 404 else ""}.\n{_how_to_fix(name)}') from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ScriptNotFoundError(f'Could not download {name} from {url} ({getattr(e, "reason", e)}); this machine '
                                  f'may be offline.\n{_how_to_fix(name)}') from e
    try:
        compile(data, url, 'exec')
    except (SyntaxError, ValueError) as e:
        raise ScriptNotFoundError(f'{url} did not serve a Python script ({type(e).__name__}: {e}); check '
                                  f'TIMM_SCRIPTS_URL.\n{_how_to_fix(name)}') from e
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', dir=dest_dir)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.replace(tmp, dest_dir / name)
    return dest_dir / name


def find_script(script: str, download: bool = True) -> Path:
    """Absolute path of a timm script given as a path, or as a bare name (``train.py`` or ``train``) looked up in
    ``TIMM_SCRIPTS_DIR``, then the cache, then downloaded (unless ``download`` is False or downloads are off)."""
    path = Path(script).expanduser()
    if path.is_file():
        return path.resolve()
    name = path.name if path.suffix == '.py' else path.name + '.py'
    if os.sep in script or (os.altsep and os.altsep in script) or not _SAFE_NAME.match(name):
        raise ScriptNotFoundError(
            f'Script {script} does not exist. Pass an existing file, or a bare name such as train.py to look it up '
            f'in TIMM_SCRIPTS_DIR, the cache or timm\'s repository.')
    scripts_dir = os.environ.get('TIMM_SCRIPTS_DIR')
    if scripts_dir:
        candidate = Path(scripts_dir).expanduser() / name
        if candidate.is_file():
            return candidate.resolve()
        raise ScriptNotFoundError(
            f'TIMM_SCRIPTS_DIR={scripts_dir} has no {name}. Point it at the root of a timm checkout (the folder '
            f'with train.py and validate.py), or unset it to use the cache / download.')
    cached = scripts_cache_dir() / name
    if cached.is_file():
        return cached.resolve()
    if not download or _is_offline():
        why = 'downloads are disabled (TIMM_SCRIPTS_OFFLINE=1)' if _is_offline() else 'download=False'
        raise ScriptNotFoundError(f'timm\'s {name} is not in TIMM_SCRIPTS_DIR (unset) nor in the cache '
                                  f'{cached.parent}, and {why}.\n{_how_to_fix(name)}')
    return download_script(name, cached.parent).resolve()
