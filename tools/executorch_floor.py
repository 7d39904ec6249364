"""MRAP's floor on ExecuTorch (XNNPACK): the network with each attention and variants of MRAP's graph, side by side.

Every variant is exported by the project's lowering (``timm_mrap.deploy.executorch.lower_executorch``) and timed in
ExecuTorch's runtime, interleaved repeats, batch 1; ratios are medians over ``attn='none'`` in the same run.

- ``nosort``: MRAP with each top-n sort replaced by the first n values (no cut of the delegate at the sort; one
  partition for the whole network);
- ``cutonly``: MRAP with each sort replaced by a reversal that ExecuTorch runs outside the delegate (the same cuts
  and partitions as MRAP, no sorting): ``mrap`` less ``cutonly`` is the sorts' own time, ``cutonly`` less ``nosort``
  the cost of leaving and re-entering the delegate;
- ``nostats``: only MRAP's gate ``x + x * sigmoid(w_c * w_s)`` with learned constants ``w_c`` (C) and ``w_s`` (H x W):
  no statistics, no sort, no perceptron, no spatial convolution;
- ``floatmean``: MRAP with its mean over C in float32 in int8 programs (the lowering makes it an int8 convolution).

``--ops`` prints instead what the delegate runs for one MRAP module (XNNPACK operators, from an ETDump) and what stays
outside it (ExecuTorch's delegation report).

    python tools/executorch_floor.py --variants none cbam mrap nosort nostats [--int8] [--output DIR]
    python tools/executorch_floor.py --variants none mrap cutonly nosort
    python tools/executorch_floor.py --variants none mrap floatmean --int8
    python tools/executorch_floor.py --ops
"""
import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List
from unittest import mock

import torch
from torch import nn

import timm
import timm_mrap  # noqa: F401  registers the models
from timm_mrap import MRAP
from timm_mrap.deploy import executorch as et


class NoSortMRAP(MRAP):
    """MRAP with the first n values of each statistic in place of its top n (a floor variant, not MRAP)."""

    @staticmethod
    def stand_in_for_top(s: torch.Tensor, n: int) -> torch.Tensor:
        """The values that take the place of the top ``n`` of each row of ``s``."""
        return s[:, :n]

    def weights_from_statistics(self, stats_c, stats_s):
        original = torch.topk
        torch.topk = lambda s, n, dim: torch.return_types.topk((self.stand_in_for_top(s, n), s[:, :n]))
        try:
            return super().weights_from_statistics(stats_c, stats_s)
        finally:
            torch.topk = original


class CutOnlyMRAP(NoSortMRAP):
    """MRAP with its top-n sort replaced by a reversal, an op outside the delegate that costs next to nothing: the
    delegate's cuts at the sorts without the sorting (a floor variant, not MRAP)."""

    @staticmethod
    def stand_in_for_top(s: torch.Tensor, n: int) -> torch.Tensor:
        return s.flip(1)[:, :n]


SORT_STAND_INS = {'nosort': NoSortMRAP, 'cutonly': CutOnlyMRAP}


class GateOnly(nn.Module):
    """MRAP's gate with constant weights: ``x + x * sigmoid(w_c * w_s)`` (a floor variant, not MRAP)."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.w_c = nn.Parameter(torch.randn(1, channels, 1, 1))
        self.w_s = nn.Parameter(torch.randn(1, 1, height, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * torch.sigmoid(self.w_c * self.w_s)


def build(variant: str, img_size: int) -> nn.Module:
    """``mobilenetv2_mrap`` with ``attn`` ``variant``, or MRAP with one of the variants above."""
    model = timm.create_model('mobilenetv2_mrap', attn=variant if variant in ('none', 'cbam') else 'mrap')
    model.eval()
    mraps = {name: m for name, m in model.named_modules() if isinstance(m, MRAP)}
    if variant in SORT_STAND_INS:
        for m in mraps.values():
            m.__class__ = SORT_STAND_INS[variant]
    elif variant == 'nostats':
        shapes = {}
        hooks = [m.register_forward_pre_hook(lambda m, a, n=n: shapes.update({n: a[0].shape})) for n, m in
                 mraps.items()]
        with torch.no_grad():
            model(torch.randn(1, 3, img_size, img_size))
        for h in hooks:
            h.remove()
        for name, shape in shapes.items():
            model.set_submodule(name, GateOnly(*shape[1:]))
    return model


def measure(variants: List[str], int8: bool, img_size: int, repeats: int, iters: int, out: Path
            ) -> Dict[str, List[float]]:
    """ms per image of each variant's ``.pte`` (exported to ``out``) in each of the interleaved repeats."""
    from executorch.runtime import Runtime
    et.FLOAT_MODULES = et.FLOAT_MODULES + (NoSortMRAP, GateOnly)  # the floor variants stay float32 like MRAP
    x = torch.randn(1, 3, img_size, img_size)
    methods = {}
    for v in variants:
        path = out / f'{v}{"_int8" if int8 else ""}.pte'
        if not path.exists():
            t0 = time.perf_counter()
            with mock.patch.object(et, '_is_channel_mean', lambda node: False) if v == 'floatmean' else nullcontext():
                path.write_bytes(et.executorch_program(build(v, img_size), x, int8=int8))
            print(f'exported {v} in {time.perf_counter() - t0:.0f} s', flush=True)
        methods[v] = Runtime.get().load_program(path).load_method('forward')
    times = {v: [] for v in variants}
    for v in variants:  # warm-up
        for _ in range(iters):
            methods[v].execute([x])
    for _ in range(repeats):
        for v in variants:
            t0 = time.perf_counter()
            for _ in range(iters):
                methods[v].execute([x])
            times[v].append((time.perf_counter() - t0) / iters * 1e3)
    return times


def module_ops(channels: int = 96, size: int = 28) -> None:
    """Print the XNNPACK operators one MRAP module runs (ETDump of its program) and the ops outside the delegate."""
    from executorch.devtools import Inspector
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.runtime import Runtime
    x = torch.randn(1, channels, size, size)
    edge = et.lower_executorch(MRAP(channels).eval(), x)
    print(get_delegation_info(edge.exported_program().graph_module).get_summary())
    with tempfile.TemporaryDirectory() as tmp:
        pte, etdp = Path(tmp) / 'm.pte', Path(tmp) / 'm.etdp'
        pte.write_bytes(edge.to_executorch().buffer)
        program = Runtime.get().load_program(pte, enable_etdump=True, debug_buffer_size=0)
        program.load_method('forward').execute([x])
        program.write_etdump_result_to_file(str(etdp), str(Path(tmp) / 'm.debug'))
        events = [e for b in Inspector(etdump_path=str(etdp)).event_blocks if b.name == 'Execute' for e in b.events]
    delegated = [e.name for e in events if e.is_delegated_op]
    print(f'{len(delegated)} delegated operations per MRAP module:')
    print(', '.join(delegated))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--variants', nargs='+', default=['none', 'cbam', 'mrap', 'nosort', 'nostats'])
    p.add_argument('--int8', action='store_true', help='int8 programs (calibrated on random inputs)')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--threads', type=int, default=2, help="threads of ExecuTorch's thread pool")
    p.add_argument('--output', default=None, help='folder for the .pte files (reused when present)')
    p.add_argument('--ops', action='store_true', help='operations of one MRAP module instead of timings')
    args = p.parse_args()
    if args.ops:
        return module_ops()
    out = Path(args.output or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    _unsafe_reset_threadpool(args.threads)
    times = measure(args.variants, args.int8, args.img_size, args.repeats, args.iters, out)
    base = times.get('none', next(iter(times.values())))
    print(f'{args.threads} threads, ratio to none of the median (of the fastest) repeat')
    for v, t in times.items():
        med, best = statistics.median(t), min(t)
        print(f'{v:>10s} {"int8" if args.int8 else "fp32"}: {med:7.2f} ms {med / statistics.median(base):5.2f}x '
              f'({best:7.2f} ms {best / min(base):5.2f}x)')


if __name__ == '__main__':
    main()
