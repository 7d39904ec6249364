""" Which implementation MRAP runs: one process-wide switch, read once from ``TIMM_MRAP_IMPL``, and a module attribute

As timm's own fast-path switches (``timm.layers.config.use_fused_attn``): each ``MRAP`` takes the default at
construction as ``module.impl``. It chooses how the numbers are computed, not which numbers, so it is never a model
argument and never reaches ``config.json``. The implementations: ``docs/performance.md#choosing-the-implementation``.
"""
import os

__all__ = ['MRAP_IMPLS', 'SWITCH_HINT', 'get_mrap_impl', 'set_mrap_impl']

MRAP_IMPLS = ('auto', 'reference', 'fused', 'triton')
SWITCH_HINT = (
    "MRAP's implementation is a process-wide switch, not an argument: timm_mrap.layers.set_mrap_impl('reference') "
    "before building the model, TIMM_MRAP_IMPL=reference in the environment, or module.impl = 'reference' on a built "
    f"MRAP (choices: {', '.join(MRAP_IMPLS)}).")


def get_mrap_impl() -> str:
    """The implementation new ``MRAP`` modules take."""
    return _MRAP_IMPL


def set_mrap_impl(impl: str) -> None:
    """Set the implementation new ``MRAP`` modules take (existing modules keep theirs: set ``module.impl``).

    Raises:
        ValueError: ``impl`` is not one of ``MRAP_IMPLS``.
    """
    global _MRAP_IMPL
    if impl not in MRAP_IMPLS:
        raise ValueError(
            f'Unknown MRAP impl {impl!r}; choose one of {MRAP_IMPLS} (set_mrap_impl("reference") or '
            f'TIMM_MRAP_IMPL=reference).')
    _MRAP_IMPL = impl


set_mrap_impl(os.environ.get('TIMM_MRAP_IMPL') or 'auto')
