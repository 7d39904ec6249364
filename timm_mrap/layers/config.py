""" Which implementation MRAP runs: one switch, read once from ``TIMM_MRAP_IMPL``, with a getter and a setter

Follows timm's own fast-path switches (``timm.layers.config.use_fused_attn``): a module-level default, each ``MRAP``
stores its choice at construction, and ``forward`` branches on that attribute with the reference ops as the
always-correct fallback.

Implementations:

* ``'reference'``: the plain composition of standard ops (``timm_mrap.layers.mrap``). TorchScript, tracing, ONNX
  export and ``torch.compile`` always take it (Inductor fuses it).
* ``'fused'``: few-pass eager ops with one hand-written backward (``timm_mrap.layers.mrap_fused``); float32, bfloat16
  and float16, CPU and CUDA.
* ``'triton'``: Triton kernels for the statistics, the gate and their gradients (``timm_mrap.layers.mrap_triton``);
  CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
* ``'auto'`` (default): ``'triton'`` for CUDA tensors when Triton is installed, else ``'fused'``.
"""
import os

__all__ = ['MRAP_IMPLS', 'get_mrap_impl', 'set_mrap_impl', 'check_mrap_impl']

MRAP_IMPLS = ('auto', 'reference', 'fused', 'triton')


def check_mrap_impl(impl: str) -> str:
    """``impl`` if it names an implementation, else a ValueError that lists the choices."""
    if impl not in MRAP_IMPLS:
        raise ValueError(
            f'Unknown MRAP impl {impl!r}; choose one of {MRAP_IMPLS} (e.g. MRAP(..., impl="auto"), '
            f'create_model(..., mrap_impl="reference") or TIMM_MRAP_IMPL=reference).')
    return impl


_MRAP_IMPL = check_mrap_impl(os.environ.get('TIMM_MRAP_IMPL', 'auto'))


def get_mrap_impl() -> str:
    """The implementation new ``MRAP`` modules take when none is given."""
    return _MRAP_IMPL


def set_mrap_impl(impl: str) -> None:
    """Set the implementation new ``MRAP`` modules take when none is given (existing modules keep theirs)."""
    global _MRAP_IMPL
    _MRAP_IMPL = check_mrap_impl(impl)
