""" Triton kernels for MRAP's full-size work: statistics, gate and their gradients (``docs/performance.md``)

B x C x (H * W) tiles walked through the strides (NCHW or channels_last, no copies), float32 accumulation; CUDA
tensors, or CPU tensors under ``TRITON_INTERPRET=1``. ``TritonKernels`` has the interface of ``TorchKernels``.
"""
import os
from typing import Tuple

import torch

try:
    import triton
    import triton.language as tl
    _HAS_TRITON = True
except ImportError:  # CPU-only torch builds and other platforms ship without Triton
    triton = tl = None
    _HAS_TRITON = False

__all__ = ['TritonKernels', 'triton_available', 'triton_interpreted']

_BLOCK_C = 32
_BLOCK_HW = 64


def triton_interpreted() -> bool:
    """True when Triton runs kernels on CPU tensors through its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


def triton_available() -> bool:
    """Triton is installed and has somewhere to run: a CUDA device, or the interpreter."""
    return _HAS_TRITON and (torch.cuda.is_available() or triton_interpreted())


if _HAS_TRITON:
    @triton.jit
    def _position_block(HW, stride_b, BLOCK_HW: tl.constexpr):
        """This program's sample, its offset, and block of positions in a (B, HW blocks) grid that loops over C."""
        pid_b = tl.program_id(0)
        pid_hw = tl.program_id(1)
        hw = pid_hw * BLOCK_HW + tl.arange(0, BLOCK_HW)
        return pid_b, pid_b.to(tl.int64) * stride_b, pid_hw, hw, hw < HW

    @triton.jit
    def _channel_chunk(x_ptr, c0, C, hw, hw_mask, stride_c, stride_hw, BLOCK_C: tl.constexpr):
        """Channels ``c0 .. c0 + BLOCK_C`` of a position block: channels, their mask, the tile's mask and offsets, and
        the tile of ``x_ptr`` (a sample's start) in float32."""
        c = c0 + tl.arange(0, BLOCK_C)
        c_mask = c < C
        mask = c_mask[:, None] & hw_mask[None, :]
        offsets = c[:, None] * stride_c + hw[None, :] * stride_hw
        return c, c_mask, mask, offsets, tl.load(x_ptr + offsets, mask=mask, other=0.).to(tl.float32)

    @triton.jit
    def _statistics_kernel(
            x_ptr, mean_s_ptr, var_s_ptr, part_mean_ptr, part_m2_ptr,
            C, HW, n_blocks, stride_b, stride_c, stride_hw,
            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """Spatial mean / variance, merged chunk by chunk over C (Chan et al.), and per-block channel partials; each
        partial two-pass over a tile held in registers, so constant rows give exactly 0."""
        pid_b, base, pid_hw, hw, hw_mask = _position_block(HW, stride_b, BLOCK_HW)
        n_hw = tl.minimum(HW - pid_hw * BLOCK_HW, BLOCK_HW).to(tl.float32)
        mean_s = tl.zeros([BLOCK_HW], dtype=tl.float32)
        m2_s = tl.zeros([BLOCK_HW], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c, c_mask, mask, _, tile = _channel_chunk(x_ptr + base, c0, C, hw, hw_mask, stride_c, stride_hw, BLOCK_C)
            tile_mean_c = tl.sum(tile, axis=1) / n_hw
            dev_c = tl.where(mask, tile - tile_mean_c[:, None], 0.)
            part = (pid_b * n_blocks + pid_hw) * C + c
            tl.store(part_mean_ptr + part, tile_mean_c, mask=c_mask)
            tl.store(part_m2_ptr + part, tl.sum(dev_c * dev_c, axis=1), mask=c_mask)
            n_prev = (c0 + tl.zeros([1], dtype=tl.int32)).to(tl.float32)  # channels merged so far
            n_new = tl.minimum(C - n_prev, BLOCK_C)
            chunk_mean = tl.sum(tile, axis=0) / n_new
            dev_s = tl.where(mask, tile - chunk_mean[None, :], 0.)
            delta = chunk_mean - mean_s
            total = n_prev + n_new
            mean_s += delta * (n_new / total)
            m2_s += tl.sum(dev_s * dev_s, axis=0) + delta * delta * (n_prev * n_new / total)
        out = pid_b * HW + hw
        tl.store(mean_s_ptr + out, mean_s, mask=hw_mask)
        tl.store(var_s_ptr + out, m2_s / tl.maximum(C - 1, 1).to(tl.float32), mask=hw_mask)

    @triton.jit
    def _elementwise_tile(C, HW, stride_b, stride_c, stride_hw, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """This program's BLOCK_C x BLOCK_HW tile of a (B, C, HW) grid: sample, channels, positions, masks, offsets."""
        pid_b = tl.program_id(0)
        hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask, hw_mask = c < C, hw < HW
        mask = c_mask[:, None] & hw_mask[None, :]
        offsets = pid_b.to(tl.int64) * stride_b + c[:, None] * stride_c + hw[None, :] * stride_hw
        return pid_b, c, hw, c_mask, hw_mask, mask, offsets

    @triton.jit
    def _gate_kernel(
            x_ptr, w_c_ptr, w_s_ptr, out_ptr,
            C, HW, stride_b, stride_c, stride_hw,
            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``x * (1 + sigmoid(w_c * w_s))``, written in the input dtype."""
        pid_b, c, hw, c_mask, hw_mask, mask, offsets = _elementwise_tile(
            C, HW, stride_b, stride_c, stride_hw, BLOCK_C, BLOCK_HW)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.)
        w_c = tl.load(w_c_ptr + pid_b * C + c, mask=c_mask, other=0.)
        w_s = tl.load(w_s_ptr + pid_b * HW + hw, mask=hw_mask, other=0.)
        gate = tl.sigmoid(w_c[:, None] * w_s[None, :])
        tl.store(out_ptr + offsets, (x.to(tl.float32) * (1. + gate)).to(x.dtype), mask=mask)

    @triton.jit
    def _gate_backward_kernel(
            grad_ptr, x_ptr, w_c_ptr, w_s_ptr, grad_x_ptr, part_grad_c_ptr, grad_s_ptr,
            C, HW, n_blocks, stride_b, stride_c, stride_hw,
            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """The gradients of ``x``, ``w_c`` (per-block partials) and ``w_s`` from one read of the output gradient and
        ``x``; the sigmoid is recomputed."""
        pid_b, base, pid_hw, hw, hw_mask = _position_block(HW, stride_b, BLOCK_HW)
        w_s = tl.load(w_s_ptr + pid_b * HW + hw, mask=hw_mask, other=0.)
        grad_s = tl.zeros([BLOCK_HW], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c, c_mask, mask, offsets, x = _channel_chunk(x_ptr + base, c0, C, hw, hw_mask, stride_c, stride_hw, BLOCK_C)
            grad = tl.load(grad_ptr + base + offsets, mask=mask, other=0.).to(tl.float32)
            w_c = tl.load(w_c_ptr + pid_b * C + c, mask=c_mask, other=0.)
            gate = tl.sigmoid(w_c[:, None] * w_s[None, :])
            grad_x = (grad * (1. + gate)).to(grad_x_ptr.dtype.element_ty)
            tl.store(grad_x_ptr + base + offsets, grad_x, mask=mask)
            grad_z = grad * x * gate * (1. - gate)
            tl.store(part_grad_c_ptr + (pid_b * n_blocks + pid_hw) * C + c,
                     tl.sum(grad_z * w_s[None, :], axis=1), mask=c_mask)
            grad_s += tl.sum(grad_z * w_c[:, None], axis=0)
        tl.store(grad_s_ptr + pid_b * HW + hw, grad_s, mask=hw_mask)

    @triton.jit
    def _deviation_mean_kernel(
            x_ptr, mean_c_ptr, mean_s_ptr, part_dev_c_ptr, dev_s_ptr,
            C, HW, n_blocks, stride_b, stride_c, stride_hw,
            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """The means of ``x - mean_c`` over positions (per-block partials) and of ``x - mean_s`` over channels: the
        rounding errors of the float32 means, from one read of ``x``."""
        pid_b, base, pid_hw, hw, hw_mask = _position_block(HW, stride_b, BLOCK_HW)
        mean_s = tl.load(mean_s_ptr + pid_b * HW + hw, mask=hw_mask, other=0.)
        dev_s = tl.zeros([BLOCK_HW], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c, c_mask, mask, _, tile = _channel_chunk(x_ptr + base, c0, C, hw, hw_mask, stride_c, stride_hw, BLOCK_C)
            mean_c = tl.load(mean_c_ptr + pid_b * C + c, mask=c_mask, other=0.)
            tl.store(part_dev_c_ptr + (pid_b * n_blocks + pid_hw) * C + c,
                     tl.sum(tl.where(mask, tile - mean_c[:, None], 0.), axis=1), mask=c_mask)
            dev_s += tl.sum(tl.where(mask, tile - mean_s[None, :], 0.), axis=0)
        tl.store(dev_s_ptr + pid_b * HW + hw, dev_s / C, mask=hw_mask)

    @triton.jit
    def _statistics_backward_kernel(
            x_ptr, mean_c_ptr, dev_c_ptr, a_c_ptr, b_c_ptr, mean_s_ptr, dev_s_ptr, a_s_ptr, b_s_ptr, dx_ptr,
            C, HW, stride_b, stride_c, stride_hw,
            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``a_c * (x - mean_c - dev_c) + b_c + a_s * (x - mean_s - dev_s) + b_s`` in the input dtype."""
        pid_b, c, hw, c_mask, hw_mask, mask, offsets = _elementwise_tile(
            C, HW, stride_b, stride_c, stride_hw, BLOCK_C, BLOCK_HW)
        x_in = tl.load(x_ptr + offsets, mask=mask, other=0.)
        x = x_in.to(tl.float32)
        per_c = pid_b * C + c
        per_hw = pid_b * HW + hw
        mean_c = tl.load(mean_c_ptr + per_c, mask=c_mask, other=0.)
        dev_c = tl.load(dev_c_ptr + per_c, mask=c_mask, other=0.)
        a_c = tl.load(a_c_ptr + per_c, mask=c_mask, other=0.)
        b_c = tl.load(b_c_ptr + per_c, mask=c_mask, other=0.)
        mean_s = tl.load(mean_s_ptr + per_hw, mask=hw_mask, other=0.)
        dev_s = tl.load(dev_s_ptr + per_hw, mask=hw_mask, other=0.)
        a_s = tl.load(a_s_ptr + per_hw, mask=hw_mask, other=0.)
        b_s = tl.load(b_s_ptr + per_hw, mask=hw_mask, other=0.)
        dx = a_c[:, None] * ((x - mean_c[:, None]) - dev_c[:, None]) + b_c[:, None]
        dx += a_s[None, :] * ((x - mean_s[None, :]) - dev_s[None, :]) + b_s[None, :]
        tl.store(dx_ptr + offsets, dx.to(x_in.dtype), mask=mask)


def _strides(x: torch.Tensor) -> Tuple[int, int, int]:
    """Batch, channel and flattened-position strides of a B x C x H x W tensor whose H and W are dense together."""
    return x.stride(0), x.stride(1), x.stride(3)


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when (H, W) can be walked as one axis (NCHW or NHWC), else a contiguous copy."""
    return x if x.stride(2) == x.shape[3] * x.stride(3) or x.shape[2] == 1 else x.contiguous()


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.float().contiguous()


class TritonKernels:
    """The full-size work of MRAP in Triton kernels (same interface as ``mrap_kernels.TorchKernels``)."""

    @staticmethod
    def check_input(x: torch.Tensor) -> None:
        """A clear error where the Triton kernels cannot run ``x``."""
        switch = "(timm_mrap.layers.set_mrap_impl, TIMM_MRAP_IMPL or module.impl)"
        if not _HAS_TRITON:
            raise RuntimeError(
                f"MRAP impl='triton' needs Triton (it ships with PyTorch's CUDA wheels on Linux); install it or use "
                f"'auto' / 'fused' {switch}.")
        if not x.is_cuda and not triton_interpreted():
            raise RuntimeError(
                f"MRAP impl='triton' runs on CUDA tensors (got a {x.device.type} tensor); use 'auto' or 'fused' there "
                f"{switch}, or set TRITON_INTERPRET=1 before importing triton to run the kernels on CPU for testing.")
        if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise TypeError(f"MRAP impl='triton' takes float32, bfloat16 or float16 inputs, got {x.dtype}.")

    @staticmethod
    def statistics(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mean_c, std_c`` (B x C) and ``mean_s, std_s`` (B x 1 x H x W), float32, from one read of ``x``."""
        x = _dense(x)
        b, c, h, w = x.shape
        hw = h * w
        n_blocks = triton.cdiv(hw, _BLOCK_HW)
        mean_s = torch.empty((b, 1, h, w), device=x.device, dtype=torch.float32)
        var_s = torch.empty_like(mean_s)
        part_mean = torch.empty((b, n_blocks, c), device=x.device, dtype=torch.float32)
        part_m2 = torch.empty_like(part_mean)
        _statistics_kernel[(b, n_blocks)](
            x, mean_s, var_s, part_mean, part_m2, c, hw, n_blocks, *_strides(x), BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW)
        # merge the per-block channel partials (Chan et al.): small B x blocks x C tensors
        counts = (hw - torch.arange(n_blocks, device=x.device) * _BLOCK_HW).clamp(max=_BLOCK_HW).float()[None, :, None]
        mean_c = (part_mean * counts).sum(1) / hw
        m2_c = part_m2.sum(1) + (counts * (part_mean - mean_c[:, None]).square()).sum(1)
        return mean_c, (m2_c / max(hw - 1, 1)).sqrt(), mean_s, var_s.sqrt_()

    @staticmethod
    def statistics_backward(
            x: torch.Tensor, mean_c: torch.Tensor, a_c: torch.Tensor, b_c: torch.Tensor, mean_s: torch.Tensor,
            a_s: torch.Tensor, b_s: torch.Tensor,
    ) -> torch.Tensor:
        """``TorchKernels.statistics_backward`` from two reads of ``x``."""
        x = _dense(x)
        b, c, h, w = x.shape
        # the exact means: the float32 means plus the means of the deviations from them (their rounding errors)
        n_blocks = triton.cdiv(h * w, _BLOCK_HW)
        part_dev_c = torch.empty((b, n_blocks, c), device=x.device, dtype=torch.float32)
        dev_s = torch.empty((b, 1, h, w), device=x.device, dtype=torch.float32)
        mean_c, mean_s = _flat(mean_c), _flat(mean_s)
        _deviation_mean_kernel[(b, n_blocks)](
            x, mean_c, mean_s, part_dev_c, dev_s, c, h * w, n_blocks, *_strides(x),
            BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW)
        dx = torch.empty_like(x)
        _statistics_backward_kernel[(b, n_blocks, triton.cdiv(c, _BLOCK_C))](
            x, mean_c, part_dev_c.sum(1) / (h * w), _flat(a_c), _flat(b_c), mean_s, dev_s, _flat(a_s), _flat(b_s), dx,
            c, h * w, *_strides(x), BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW)
        return dx

    @staticmethod
    def gate(x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor) -> torch.Tensor:
        """``x * (1 + sigmoid(w_c * w_s))`` in ``x``'s dtype and layout."""
        x = _dense(x)
        b, c, h, w = x.shape
        out = torch.empty_like(x)
        grid = (b, triton.cdiv(h * w, _BLOCK_HW), triton.cdiv(c, _BLOCK_C))
        _gate_kernel[grid](
            x, _flat(w_c), _flat(w_s), out, c, h * w, *_strides(x), BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW)
        return out

    @staticmethod
    def gate_backward(
            grad: torch.Tensor, x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradients of ``x`` (its dtype and layout), ``w_c`` (B x C) and ``w_s`` (B x 1 x H x W) (float32)."""
        x = _dense(x)
        b, c, h, w = x.shape
        if grad.stride() != x.stride():  # the kernels walk both with x's strides
            grad = torch.empty_like(x).copy_(grad)
        n_blocks = triton.cdiv(h * w, _BLOCK_HW)
        grad_x = torch.empty_like(x)
        part_grad_c = torch.empty((b, n_blocks, c), device=x.device, dtype=torch.float32)
        grad_s = torch.empty((b, 1, h, w), device=x.device, dtype=torch.float32)
        _gate_backward_kernel[(b, n_blocks)](
            grad, x, _flat(w_c), _flat(w_s), grad_x, part_grad_c, grad_s, c, h * w, n_blocks, *_strides(x),
            BLOCK_C=_BLOCK_C, BLOCK_HW=_BLOCK_HW)
        return grad_x, part_grad_c.sum(1), grad_s
