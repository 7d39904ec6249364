""" Which implementation MRAP runs: one process-wide switch, read once from ``TIMM_MRAP_IMPL``, and a module attribute

Follows timm's own fast-path switches (``timm.layers.config.use_fused_attn``): a module-level default with a getter and
a setter; each ``MRAP`` takes the default at construction as ``module.impl``, and ``forward`` branches on that
attribute. It chooses how the numbers are computed, not which numbers, so it is never a model argument and never
reaches ``config.json``.

Implementations:

* ``'reference'``: the math in standard ops (``MRAP.statistics`` / ``MRAP.weights_from_statistics``).
  TorchScript, ``torch.compile`` (Inductor fuses it) and recorded graphs (tracing, ONNX, ``torch.export``) always take
  it.
* ``'fused'``: the registered operators of ``timm_mrap.layers.mrap_ops`` with the PyTorch-op kernel
  (``mrap_kernels``: cache-sized chunks on CPU, whole-tensor ops on CUDA); float64 / float32 / bfloat16 / float16.
* ``'triton'``: the same operators with the Triton kernels (``mrap_triton``): CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1``.
* ``'auto'`` (default): the operators, with Triton for CUDA tensors when it is installed and the PyTorch-op kernel
  elsewhere.

All of them are exact in the same way (two-pass statistics) and work with ``torch.compile``, ``torch.func``,
double backward and activation checkpointing. The choice applies to eager mode.
"""
import os

__all__ = ['MRAP_IMPLS', 'SWITCH_HINT', 'get_mrap_impl', 'set_mrap_impl', 'check_mrap_impl']

MRAP_IMPLS = ('auto', 'reference', 'fused', 'triton')
SWITCH_HINT = (
    "MRAP's implementation is a process-wide switch, not an argument: timm_mrap.layers.set_mrap_impl('reference') "
    "before building the model, TIMM_MRAP_IMPL=reference in the environment, or module.impl = 'reference' on a built "
    f"MRAP (choices: {', '.join(MRAP_IMPLS)}).")


def check_mrap_impl(impl: str) -> str:
    """``impl`` if it names an implementation, else a ValueError that lists the choices."""
    if impl not in MRAP_IMPLS:
        raise ValueError(
            f'Unknown MRAP impl {impl!r}; choose one of {MRAP_IMPLS} (set_mrap_impl("reference") or '
            f'TIMM_MRAP_IMPL=reference).')
    return impl


_MRAP_IMPL = check_mrap_impl(os.environ.get('TIMM_MRAP_IMPL', 'auto') or 'auto')


def get_mrap_impl() -> str:
    """The implementation new ``MRAP`` modules take."""
    return _MRAP_IMPL


def set_mrap_impl(impl: str) -> None:
    """Set the implementation new ``MRAP`` modules take (existing modules keep theirs: set ``module.impl``)."""
    global _MRAP_IMPL
    _MRAP_IMPL = check_mrap_impl(impl)
