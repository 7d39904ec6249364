""" MRAP's full-size work in PyTorch ops: the ``'torch'`` kernel of the ``timm_mrap::mrap_*`` operators

On CPU, cache-sized chunks of a few samples in reused float32 buffers; elsewhere whole-tensor ops accumulating in
float32, two-pass (``docs/performance.md``).
"""
import math
from typing import Tuple

import torch

__all__ = ['TorchKernels', 'std_grad_scale']

Stats = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

# elements per chunk of the CPU kernels (their float32 work buffers of this size stay in cache)
_CPU_CHUNK_NUMEL = 1 << 18


def stats_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics are float32, float64 for float64 inputs."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for NHWC tensors, else ``contiguous_format``."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def std_grad_scale(g_std: torch.Tensor, std: torch.Tensor, count: int) -> torch.Tensor:
    """``a`` in the input gradient ``a * (x - mean) + g_mean / count`` of a mean / unbiased-std reduction over ``count``
    items: ``g_std / ((count - 1) * std)``, 0 where the std is 0 (as ``torch.std``); differentiable ops."""
    a = torch.zeros_like(std)
    if count > 1:
        a = torch.where(std > 0, g_std / (std.clamp_min(torch.finfo(std.dtype).tiny) * (count - 1)), a)
    return a


def _chunks(x: torch.Tensor) -> Tuple[int, torch.Tensor]:
    """Samples per chunk (cache-sized on CPU, the whole batch elsewhere) and a float32 work buffer in ``x``'s layout."""
    b, c, h, w = x.shape
    rows = max(1, _CPU_CHUNK_NUMEL // max(1, c * h * w)) if x.device.type == 'cpu' else max(b, 1)
    buf = torch.empty((min(rows, b), c, h, w), device=x.device, dtype=stats_dtype(x), memory_format=memory_format_of(x))
    return rows, buf


def _whole_tensor_statistics(x: torch.Tensor) -> Stats:
    """``TorchKernels.statistics`` off the CPU, on a ``stats_dtype`` copy: each std from the deviations from the mean,
    less their own mean (the rounding error of the mean). ``torch.std_mean`` (Welford's running mean) loses digits on
    CUDA where the spread is tiny against the mean."""
    _, c, h, w = x.shape
    x = x.to(stats_dtype(x))
    mean_c, mean_s = x.mean((2, 3), keepdim=True), x.mean(1, keepdim=True)
    std_c = _deviation_norm(x - mean_c, (2, 3)).mul_(1. / math.sqrt(max(h * w - 1, 1)))
    std_s = _deviation_norm(x - mean_s, (1,)).mul_(1. / math.sqrt(max(c - 1, 1)))
    return mean_c.flatten(1), std_c.flatten(1), mean_s, std_s


def _deviation_norm(dev: torch.Tensor, dim: Tuple[int, ...]) -> torch.Tensor:
    """The 2-norm over ``dim`` of ``dev`` less its mean over ``dim`` (kept dims)."""
    return torch.linalg.vector_norm(dev.sub_(dev.mean(dim, keepdim=True)), 2, dim, keepdim=True)


class TorchKernels:
    """The full-size work of MRAP from PyTorch ops (any device; float64, float32, bfloat16, float16)."""

    @staticmethod
    def statistics(x: torch.Tensor) -> Stats:
        """``mean_c, std_c`` (B x C) and ``mean_s, std_s`` (B x 1 x H x W) in ``stats_dtype``; unbiased std, 0 for one
        element, two-pass (exactly 0 for constant rows, no cancellation on large means). On CPU, the rounding error
        ``d`` of a float32 mean adds only ``n * d ** 2`` to the sum of squared deviations, so the std takes no
        correction for it; the backward, which uses the deviations themselves, does."""
        if x.device.type != 'cpu' or x.shape[0] == 0:
            return _whole_tensor_statistics(x)
        _, c, h, w = x.shape
        rows, buf = _chunks(x)
        convert = torch.empty_like(buf) if x.dtype != buf.dtype else None
        scale_c, scale_s = 1. / math.sqrt(max(h * w - 1, 1)), 1. / max(c - 1, 1)
        parts = []
        for chunk in x.split(rows):
            n = chunk.shape[0]
            f = convert[:n].copy_(chunk) if convert is not None else chunk
            mean_c, mean_s = f.mean((2, 3)), f.mean(1, keepdim=True)
            dev = torch.sub(f, mean_c.view(n, c, 1, 1), out=buf[:n])
            std_c = torch.linalg.vector_norm(dev, 2, (2, 3)).mul_(scale_c)  # fused square-sum over the contiguous axes
            std_s = torch.sub(f, mean_s, out=dev).square_().sum(1, keepdim=True).mul_(scale_s).sqrt_()
            parts.append((mean_c, std_c, mean_s, std_s))
        return parts[0] if len(parts) == 1 else tuple(torch.cat(p) for p in zip(*parts))

    @staticmethod
    def statistics_backward(
            x: torch.Tensor, mean_c: torch.Tensor, a_c: torch.Tensor, b_c: torch.Tensor, mean_s: torch.Tensor,
            a_s: torch.Tensor, b_s: torch.Tensor,
    ) -> torch.Tensor:
        """``a_c * (x - mean_c) + b_c + a_s * (x - mean_s) + b_s`` (the statistics' input gradient) in ``x``'s dtype
        and layout. Each deviation is taken from the exact mean: ``x - mean`` less its own mean, the rounding error of
        the float32 ``mean`` (a sizeable part of every deviation where the spread is tiny against the mean)."""
        b, c, h, w = x.shape
        rows, buf = _chunks(x)
        out = torch.empty_like(buf) if buf.dtype != x.dtype else None
        dx = torch.empty_like(x, memory_format=memory_format_of(x))
        mean_c, a_c, b_c = (t.view(b, c, 1, 1) for t in (mean_c, a_c, b_c))
        for start in range(0, b, rows):
            sl, n = slice(start, start + rows), min(rows, b - start)
            target = dx[sl] if out is None else out[:n]
            dev = torch.sub(x[sl], mean_c[sl], out=buf[:n])
            dev.sub_(dev.mean((2, 3), keepdim=True))
            torch.mul(dev, a_c[sl], out=target).add_(b_c[sl])
            dev = torch.sub(x[sl], mean_s[sl], out=buf[:n])
            dev.sub_(dev.mean(1, keepdim=True))
            target.addcmul_(dev, a_s[sl]).add_(b_s[sl])
            if out is not None:
                dx[sl].copy_(target)
        return dx

    @staticmethod
    def gate(x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor) -> torch.Tensor:
        """``x * (1 + sigmoid(w_c * w_s))`` in ``x``'s dtype and layout."""
        gate = torch.empty_like(x, memory_format=memory_format_of(x))
        # in x's dtype: a float32 product written to a bf16 / fp16 buffer takes a slow unvectorized path on CPU
        torch.mul(w_c.to(x.dtype)[:, :, None, None], w_s.to(x.dtype), out=gate)
        return torch.addcmul(x, x, gate.sigmoid_(), out=gate)

    @staticmethod
    def gate_backward(
            grad: torch.Tensor, x: torch.Tensor, w_c: torch.Tensor, w_s: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradients of ``x`` (its dtype and layout), ``w_c`` (B x C) and ``w_s`` (B x 1 x H x W) (float32); the
        ``w_c`` / ``w_s`` terms ``grad * x * gate * (1 - gate)`` are reduced by batched matrix products."""
        b, c, h, w = x.shape
        channels_last = memory_format_of(x) == torch.channels_last
        grad = grad.contiguous(memory_format=memory_format_of(x))
        rows, buf = _chunks(x)
        gate = torch.empty_like(buf)
        grad_x = torch.empty_like(x, memory_format=memory_format_of(x))
        grad_c = torch.empty(b, c, device=x.device, dtype=buf.dtype)
        grad_s = torch.empty(b, 1, h, w, device=x.device, dtype=buf.dtype)
        for start in range(0, b, rows):
            sl, n = slice(start, start + rows), min(rows, b - start)
            g = torch.mul(w_c[sl].view(n, c, 1, 1), w_s[sl], out=gate[:n]).sigmoid_()
            torch.addcmul(grad[sl], grad[sl], g, out=grad_x[sl])
            grad_z = torch.mul(grad[sl], x[sl], out=buf[:n]).mul_(g)
            grad_z.addcmul_(grad_z, g, value=-1.)  # grad * x * gate * (1 - gate)
            ws, wc = w_s[sl].reshape(n, h * w, 1).to(buf.dtype), w_c[sl].reshape(n, c, 1).to(buf.dtype)
            if channels_last:  # reduce over n x HW x C
                flat = grad_z.permute(0, 2, 3, 1).reshape(n, h * w, c)
                torch.bmm(ws.transpose(1, 2), flat, out=grad_c[sl].view(n, 1, c))
                torch.bmm(flat, wc, out=grad_s[sl].view(n, h * w, 1))
            else:
                flat = grad_z.view(n, c, h * w)
                torch.bmm(flat, ws, out=grad_c[sl].view(n, c, 1))
                torch.bmm(wc.transpose(1, 2), flat, out=grad_s[sl].view(n, 1, h * w))
        return grad_x, grad_c, grad_s
