""" Find timm's command-line scripts (train.py, validate.py, benchmark.py, ...)

timm's wheel ships the library but not the scripts at the root of its repository. They are looked up, in order:

1. ``TIMM_SCRIPTS_DIR``: a folder holding them, usually a timm checkout (``git clone --branch v1.0.31
   https://github.com/huggingface/pytorch-image-models``).
2. The per-user cache, ``$XDG_CACHE_HOME/timm_mrap/scripts/<timm version>/`` (``~/.cache/...`` by default;
   ``TIMM_MRAP_CACHE_DIR`` replaces ``$XDG_CACHE_HOME/timm_mrap``).
3. A download from ``$TIMM_SCRIPTS_URL/<ref>/<script>`` (GitHub raw by default) at the git tag of the installed
   timm (``v1.0.31``), written to the cache. ``TIMM_SCRIPTS_OFFLINE=1`` disables it.

Every failure raises :class:`ScriptNotFoundError` with a message that says how to fix it.
"""
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import timm

from ..errors import ScriptNotFoundError

__all__ = [
    'ScriptNotFoundError', 'DEFAULT_SCRIPTS_URL', 'scripts_cache_dir', 'scripts_ref', 'script_url',
    'download_script', 'find_script',
]

DEFAULT_SCRIPTS_URL = 'https://raw.githubusercontent.com/huggingface/pytorch-image-models'
_SAFE_NAME = re.compile(r'^[A-Za-z0-9_.-]+\.py$')


def _is_offline() -> bool:
    return os.environ.get('TIMM_SCRIPTS_OFFLINE', '').lower() in ('1', 'true', 'yes', 'on')


def scripts_cache_dir(timm_version: Optional[str] = None) -> Path:
    """Per-user cache folder for the scripts of one timm version."""
    root = os.environ.get('TIMM_MRAP_CACHE_DIR')
    if not root:
        xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        root = os.path.join(xdg, 'timm_mrap')
    return Path(root) / 'scripts' / (timm_version or timm.__version__)


def scripts_ref(timm_version: Optional[str] = None) -> str:
    """Git ref whose scripts match ``timm_version``: the release tag ``v<version>``, ``main`` for dev builds."""
    version = timm_version or timm.__version__
    return 'main' if re.search(r'dev|\+', version) else f'v{version}'


def script_url(name: str, timm_version: Optional[str] = None, base_url: Optional[str] = None) -> str:
    """Download address of script ``name`` (``$TIMM_SCRIPTS_URL`` or GitHub raw, at :func:`scripts_ref`)."""
    base = (base_url or os.environ.get('TIMM_SCRIPTS_URL') or DEFAULT_SCRIPTS_URL).rstrip('/')
    return f'{base}/{scripts_ref(timm_version)}/{name}'


def _how_to_fix(name: str, version: str) -> str:
    return (
        f'To fix it, do one of:\n'
        f'  - point TIMM_SCRIPTS_DIR at a timm checkout of the installed version:\n'
        f'      git clone --depth 1 --branch {scripts_ref(version)} '
        f'https://github.com/huggingface/pytorch-image-models\n'
        f'      export TIMM_SCRIPTS_DIR=$PWD/pytorch-image-models\n'
        f'  - copy {name} from such a checkout into {scripts_cache_dir(version)}/ (e.g. on an offline machine)\n'
        f'  - use the built-in trainer / validator instead: python -m timm_mrap.training.builtin.train / '
        f'python -m timm_mrap.training.builtin.validate (train.sh / validate.sh fall back to them on their own).')


def download_script(
        name: str,
        dest_dir: Path,
        timm_version: Optional[str] = None,
        base_url: Optional[str] = None,
        timeout: float = 20.,
) -> Path:
    """Download script ``name`` into ``dest_dir`` (atomically: a partial file never appears under its name).

    Raises:
        ScriptNotFoundError: the address cannot be reached, has no such file, or serves something that is not Python.
    """
    version = timm_version or timm.__version__
    url = script_url(name, version, base_url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except urllib.error.HTTPError as e:
        raise ScriptNotFoundError(
            f'Downloading {name} from {url} failed with HTTP {e.code}'
            f'{" (no such tag or file)" if e.code == 404 else ""}.\n{_how_to_fix(name, version)}') from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, 'reason', e)
        raise ScriptNotFoundError(
            f'Could not download {name} from {url} ({reason}); this machine may be offline.\n'
            f'{_how_to_fix(name, version)}') from e
    try:
        compile(data, url, 'exec')
    except (SyntaxError, ValueError) as e:
        raise ScriptNotFoundError(
            f'{url} did not serve a Python script ({type(e).__name__}: {e}); check TIMM_SCRIPTS_URL.\n'
            f'{_how_to_fix(name, version)}') from e
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', dir=dest_dir)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    dest = dest_dir / name
    os.replace(tmp, dest)
    return dest


def find_script(
        script: str,
        download: bool = True,
        timm_version: Optional[str] = None,
        base_url: Optional[str] = None,
) -> Path:
    """Resolve a timm script given as a path or a bare name (``train.py``).

    Args:
        script: A path to an existing file, or a bare file name looked up in ``TIMM_SCRIPTS_DIR``, then the cache,
            then downloaded (``train`` means ``train.py``).
        download: Allow the download step (also disabled by ``TIMM_SCRIPTS_OFFLINE=1``).
        timm_version: Version whose scripts to use; the installed timm when None.
        base_url: Download base address; ``$TIMM_SCRIPTS_URL`` or GitHub raw when None.

    Returns:
        Absolute path of the script.
    """
    version = timm_version or timm.__version__
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

    cached = scripts_cache_dir(version) / name
    if cached.is_file():
        return cached.resolve()

    if not download or _is_offline():
        why = 'downloads are disabled (TIMM_SCRIPTS_OFFLINE=1)' if _is_offline() else 'download=False'
        raise ScriptNotFoundError(
            f'timm\'s {name} is not in TIMM_SCRIPTS_DIR (unset) nor in the cache {cached.parent}, and {why}.\n'
            f'{_how_to_fix(name, version)}')
    return download_script(name, scripts_cache_dir(version), version, base_url).resolve()
