""" Upload a Hub folder with ``HfApi`` as timm's ``push_to_hf_hub`` does (which takes a model, not a folder with its
card); the token comes from huggingface_hub's usual places (``HF_TOKEN``, ``hf auth login``)."""
from pathlib import Path
from typing import Any, List, Optional

from huggingface_hub import HfApi

from ..checkpoint import PathLike
from ..errors import PushError
from ..version import __version__
from .folder import FOLDER_FILES

__all__ = ['PushError', 'check_hub_folder', 'push_folder']

PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.tar', '.pkl', '.pickle', '.ckpt')
PROTECTED_FILES = ('README.md', 'model.safetensors')


def check_hub_folder(folder: PathLike, repo_id: Optional[str] = None) -> List[str]:
    """The files of a Hub folder, after checking it is complete, pickle-free and its card names ``repo_id``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f'{folder} is not a folder; prepare one first (python -m timm_mrap.hub prepare ...).')
    files = sorted(p.name for p in folder.iterdir())
    missing = [f for f in FOLDER_FILES if f not in files]
    if missing:
        raise PushError(f'{folder} lacks {missing}; push uploads a folder written by python -m timm_mrap.hub prepare.')
    unsafe = [f for f in files if f.endswith(PICKLE_SUFFIXES) or (folder / f).is_dir()]
    if unsafe:
        raise PushError(f'{folder} holds {unsafe}: only safetensors weights, config.json and README.md are published; '
                        f'remove them or prepare it again.')
    if repo_id is not None and repo_id not in (folder / 'README.md').read_text(encoding='utf-8'):
        raise PushError(f'README.md in {folder} was written for another repo than {repo_id!r}; prepare it again with '
                        f'--repo-id {repo_id}.')
    return files


def push_folder(folder: PathLike, repo_id: str, *, revision: Optional[str] = None, private: bool = False,
                create_pr: bool = False, overwrite: bool = False, commit_message: Optional[str] = None,
                api: Optional[Any] = None) -> Any:
    """Upload a folder written by ``write_hub_folder`` to ``repo_id`` (created when missing), on branch ``revision``
    (created from main when missing); returns huggingface_hub's ``CommitInfo``.

    Args:
        overwrite: Allow replacing a README.md or model.safetensors the repo already has at that revision.
        api: An ``HfApi``-compatible client; default ``HfApi()`` with the token from the usual places.
    """
    files = check_hub_folder(folder, repo_id)
    api = api if api is not None else HfApi(library_name='timm-mrap', library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model').repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type='model')
    existing = [f for f in api.list_repo_files(repo_id, revision=revision, repo_type='model') if f in PROTECTED_FILES]
    if existing and not overwrite:
        raise PushError(f'{repo_id}@{revision or "main"} already has {existing}; pass --overwrite to replace them '
                        f'(with --create-pr to propose the change for review).')
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type='model', revision=revision,
                             create_pr=create_pr, allow_patterns=files,
                             commit_message=commit_message or f'Add {", ".join(files)} (timm-mrap)')
