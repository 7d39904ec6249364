""" ExecuTorch export (XNNPACK delegate, fp32 or int8), run by ExecuTorch's own runtime

``torch.export`` records MRAP's reference math (``MRAP.statistics``), all of it ops the XNNPACK delegate takes but the
top-n sort, which runs in ExecuTorch's portable kernels: one partition per sort boundary. Activations are channels-last
from the input on, so those boundaries hand the delegate's NHWC layout over as it is. The spatial convolutions of MRAP
and MAFC (one output channel) run on space-to-depth blocks (``BlockedSpatialConv``). int8 is PT2E quantization with
ExecuTorch's ``XNNPACKQuantizer``, calibrated on the caller's batches (``timm_mrap.deploy.calibration_batches``).
executorch is the optional ``mobile`` extra (``pip install 'timm-mrap[mobile]'``), imported lazily.
"""
import copy
import warnings
from pathlib import Path
from typing import Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers import MRAP
from .formats import Predictor, require

__all__ = [
    'FLOAT_MODULES', 'BlockedSpatialConv', 'ChannelsLastInput', 'block_spatial_convs', 'executorch_program',
    'load_executorch', 'lower_executorch', 'write_executorch',
]


# Attention kept in float32 inside int8 programs (still in the XNNPACK delegate): its statistics (means of squared
# deviations, a square root) lose too much in int8, and XNNPACK's partitioner cannot split the quantized module around
# the top-n sort (dependency cycles). MRAP's mean over C is the exception (``_int8_quantizer``).
FLOAT_MODULES = (MRAP,)


class ChannelsLastInput(nn.Module):
    """Runs ``model`` on a channels-last copy of its NCHW input.

    The exported program keeps a plain NCHW input while every activation inside is channels-last, the layout the
    XNNPACK delegate computes in, so the graph's exits from the delegate (MRAP's top-n sort) copy no layouts.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class BlockedSpatialConv(nn.Module):
    """A 'same' convolution with one output channel and the batch norm after it, computed on r x r blocks.

    Takes the B x 1 x H x W input maps as a list (``MRAP.spatial_response``), rearranges each space-to-depth (H x W ->
    r^2 x H/r x W/r), concatenates the blocked maps, convolves them 3 x 3 with r^2 output channels (one per position in
    the block) and rearranges back: the same products and sums as the k x k convolution (k <= 2r + 1), in a shape that
    fills XNNPACK's convolution tiles, where one output channel from two input channels leaves most of each tile idle.
    Concatenating after the rearrangement copies r^2 contiguous values per block instead of one value per pixel. Maps
    whose sides are not multiples of r take the plain convolution.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, block: int = 4):
        super().__init__()
        self.block = block
        with torch.no_grad():
            weight, bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
            self.register_buffer('weight', weight.detach())
            self.register_buffer('bias', bias.detach())
            self.register_buffer('blocked_weight', _blocked_weight(self.weight, block))
            self.register_buffer('blocked_bias', bias.expand(block * block).clone())

    def forward(self, maps: List[torch.Tensor]) -> torch.Tensor:
        batch, _, height, width = maps[0].shape
        r = self.block
        if height % r or width % r:
            return F.conv2d(torch.cat(maps, dim=1), self.weight, self.bias, padding=self.weight.shape[-1] // 2)
        blocks = [m.reshape(batch, height // r, r, width // r, r).permute(0, 2, 4, 1, 3) for m in maps]
        blocks = [b.reshape(batch, r * r, height // r, width // r) for b in blocks]
        y = F.conv2d(torch.cat(blocks, dim=1), self.blocked_weight, self.blocked_bias, padding=1)
        return y.reshape(batch, r, r, height // r, width // r).permute(0, 3, 1, 4, 2).reshape(batch, 1, height, width)


def _blocked_weight(weight: torch.Tensor, block: int) -> torch.Tensor:
    """The (r^2, C r^2, 3, 3) weight of ``BlockedSpatialConv`` from a (1, C, k, k) weight: output channel (a, b) and
    input channel (c, u, v) at block offset (I, J) take tap (r (I - 1) + u - a + k // 2, r (J - 1) + v - b + k // 2)."""
    k, r = weight.shape[-1], block
    a, u, offset = torch.meshgrid(torch.arange(r), torch.arange(r), torch.arange(3), indexing='ij')
    tap = r * (offset - 1) + u - a + k // 2  # (a, u, I) -> kernel row; the same map gives kernel columns
    inside = ((tap >= 0) & (tap < k)).to(weight.dtype)
    tap = tap.clamp(0, k - 1)
    taps = weight[0][:, tap][..., tap] * inside[:, :, :, None, None, None] * inside  # (c, a, u, I, b, v, J)
    return taps.permute(1, 4, 0, 2, 5, 3, 6).reshape(r * r, -1, 3, 3).contiguous()


def block_spatial_convs(model: nn.Module, block: int = 4) -> nn.Module:
    """A copy of ``model`` whose attention modules' ``spatial_conv`` + ``spatial_bn`` (MRAP, MAFC: one output channel,
    stride 1, odd kernel up to 2 ``block`` + 1) are one ``BlockedSpatialConv``; ``model`` itself is left as it is."""
    model = copy.deepcopy(model)
    for module in model.modules():
        conv, bn = getattr(module, 'spatial_conv', None), getattr(module, 'spatial_bn', None)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            continue
        k = conv.kernel_size[0]
        if (conv.out_channels == 1 and conv.kernel_size == (k, k) and k % 2 == 1 and k <= 2 * block + 1
                and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                and conv.padding == (k // 2, k // 2)):
            module.spatial_conv = BlockedSpatialConv(conv, bn, block)
            module.spatial_bn = nn.Identity()
    return model


def _is_channel_mean(node: torch.fx.Node) -> bool:
    """MRAP's mean over C in a recorded graph: its 1x1 convolution with the constant ``channel_average`` weight, or
    that weight."""
    if node.op == 'get_attr':
        return str(node.target).rsplit('.', 1)[-1] == 'channel_average'
    return (node.op == 'call_function' and node.target == torch.ops.aten.conv2d.default
            and isinstance(node.args[1], torch.fx.Node) and _is_channel_mean(node.args[1]))


def _int8_quantizer():
    """ExecuTorch's ``XNNPACKQuantizer`` (symmetric, per-channel weights) for everything but ``FLOAT_MODULES``, and
    int8 for MRAP's mean over C: it reads the block's activation, already int8, and its weights 1 / C are exact in
    int8 (their per-channel scale), so it costs the rounding of the B x 1 x H x W mean the spatial convolution's input
    already has, and runs as an int8 GEMM instead of a float one (one output channel: XNNPACK's float GEMM pays a
    broadcast and a multiply-add per input value)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import OP_TO_ANNOTATOR
    config = get_symmetric_quantization_config(is_per_channel=True)

    class MRAPQuantizer(XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            OP_TO_ANNOTATOR['conv'](model, config, _is_channel_mean)
            return super().annotate(model)

    quantizer = MRAPQuantizer().set_global(config)
    for module_type in FLOAT_MODULES:
        quantizer.set_module_type(module_type, None)
    return quantizer


def _quantize_int8(model: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """PT2E int8 quantization with ``_int8_quantizer``, calibrated on ``calibration`` batches."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    calibration = list(calibration)
    if not calibration:
        raise ValueError('int8 calibration got no batches; pass a calibration folder with images in it.')
    prepared = prepare_pt2e(torch.export.export(model, (example,), strict=False).module(), _int8_quantizer())
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


def lower_executorch(
        model: nn.Module,
        example: torch.Tensor,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        channels_last: bool = True,
):
    """``torch.export`` → (int8 PT2E) → XNNPACK lowering of ``block_spatial_convs(model)``; returns ExecuTorch's edge
    program manager.

    ``get_delegation_info(edge.exported_program().graph_module)`` tells what stayed outside the delegate;
    ``edge.to_executorch().buffer`` is the ``.pte`` program.
    """
    require('executorch', 'mobile')
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    model = block_spatial_convs(model.eval())
    model = ChannelsLastInput(model) if channels_last else model
    if int8:
        if calibration is None:
            warnings.warn('int8 calibration on random inputs: the scales fit noise, not images, so accuracy needs '
                          'real images (pass a calibration folder).')
            calibration = [torch.randn_like(example) for _ in range(8)]
        model = _quantize_int8(model, example, calibration)
    with torch.no_grad():
        program = torch.export.export(model, (example,), strict=False)
    program = program.run_decompositions({torch.ops.aten.adaptive_avg_pool2d.default: _adaptive_avg_pool2d})
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def _adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """Global average pooling as a mean, without the view of PyTorch's decomposition that XNNPACK leaves outside."""
    if list(output_size) == [1, 1]:
        return x.mean((2, 3), keepdim=True)
    return torch.ops.aten._adaptive_avg_pool2d.default(x, output_size)


def executorch_program(
        model: nn.Module,
        example: torch.Tensor,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        channels_last: Optional[bool] = None,
) -> bytes:
    """The ``.pte`` program of ``model`` for inputs shaped like ``example``.

    Args:
        channels_last: Channels-last activations inside the program (see ``ChannelsLastInput``). None takes them
            when the program then runs in ExecuTorch's runtime, else NCHW with a warning: some portable kernels
            outside the delegate (e.g. the ``amax`` of timm's CBAM) take NCHW tensors only.
        Others: as ``lower_executorch``.
    """
    calibration = None if calibration is None else list(calibration)  # may be used twice
    buffer = lower_executorch(model, example, int8, calibration, channels_last in (None, True)).to_executorch().buffer
    if channels_last is None and not _runs(buffer, example):
        warnings.warn('The channels-last ExecuTorch program does not run in ExecuTorch\'s runtime; exporting NCHW '
                      'activations instead (layout copies at every exit from the XNNPACK delegate).')
        buffer = lower_executorch(model, example, int8, calibration, False).to_executorch().buffer
    return buffer


def _runs(buffer: bytes, example: torch.Tensor) -> bool:
    from executorch.runtime import Runtime
    try:
        Runtime.get().load_program(buffer).load_method('forward').execute([example])
    except RuntimeError:
        return False
    return True


def write_executorch(
        model: nn.Module,
        example: torch.Tensor,
        path: Path,
        int8: bool = False,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        channels_last: Optional[bool] = None,
) -> None:
    """Write the ``.pte`` program of ``model`` (``executorch_program``) to ``path``; its one method ``forward`` takes a
    B x C x H x W float tensor (NCHW) of ``example``'s shape and returns the logits. ``calibration`` holds int8
    batches with the model's preprocessing applied (random inputs with a warning when None)."""
    path.write_bytes(executorch_program(model, example, int8, calibration, channels_last))


def load_executorch(pte_file: str) -> Predictor:
    """A function from a batch to the logits of a ``.pte`` program, run by ExecuTorch's runtime."""
    require('executorch', 'mobile')
    from executorch.runtime import Runtime
    program = Runtime.get().load_program(Path(pte_file))
    method = program.load_method('forward')
    # the method runs in its program's memory, which must outlive it: the function holds both
    return lambda x, _program=program: method.execute([x])[0]
