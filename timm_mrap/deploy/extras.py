"""Optional dependencies of the deployment formats: one check with an error that names the pip command."""
import importlib.util

from ..errors import MissingExtraError

__all__ = ['MissingExtraError', 'require']


def require(module: str, extra: str, package: str = '') -> None:
    """Raise ``MissingExtraError`` naming the pip command if ``module`` cannot be imported.

    Args:
        module: Top-level module to look for (``executorch``, ``coremltools``).
        extra: The timm-mrap extra that installs it (``mobile``).
        package: The pip package, when it differs from ``module``.
    """
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f'{package or module} is not installed; install it with: pip install "timm-mrap[{extra}]" '
            f'(or pip install {package or module}).')
