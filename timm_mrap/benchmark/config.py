"""What the benchmark measures: model / attention variants and settings (device, precision, runtime, mode, batch)."""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import timm
import torch
from torch import nn

__all__ = [
    'BenchmarkConfig', 'Variant', 'parse_setting', 'parse_variants', 'DEFAULT_VARIANTS', 'MODES', 'PRECISIONS',
    'RUNTIMES', 'STANDARD_SETTINGS',
]

DEFAULT_VARIANTS = (
    'mobilenetv2_mrap:none', 'mobilenetv2_mrap:se', 'mobilenetv2_mrap:eca', 'mobilenetv2_mrap:cbam',
    'mobilenetv2_mrap:mafc', 'mobilenetv2_mrap:mrap', 'mobilenetv1_100', 'mobilenetv2_100', 'mobilenetv3_large_100',
)
MODES = ('infer', 'train')
PRECISIONS = ('fp32', 'bf16', 'fp16', 'int8')
RUNTIMES = ('eager', 'compile', 'onnxruntime', 'executorch')
# the rows of the cost table in the README (docs/performance.md): device-independent settings
STANDARD_SETTINGS = (
    'fp32:eager:infer:1', 'fp32:eager:infer:32', 'fp32:eager:train:32', 'bf16:eager:infer:32', 'bf16:eager:train:32',
    'fp32:compile:infer:32', 'fp32:onnxruntime:infer:1', 'fp32:onnxruntime:infer:32', 'fp32:executorch:infer:1',
    'int8:executorch:infer:1',
)


@dataclass(frozen=True)
class Variant:
    """One model to measure: a timm model name and, for our ``*_mrap`` / ``*_mafc`` models, an ``attn`` choice and
    MRAP's implementation (``'model:attn:impl'``, e.g. ``mobilenetv2_mrap:mrap:reference``; set as ``module.impl`` on
    every MRAP, over the ``TIMM_MRAP_IMPL`` switch the others take)."""
    model: str
    attn: Optional[str] = None
    mrap_impl: Optional[str] = None

    @property
    def label(self) -> str:
        return ':'.join(p for p in (self.model, self.attn, self.mrap_impl) if p)

    def create(self, **kwargs) -> nn.Module:
        """The model, with MRAP's default implementation (the one its MACs are counted with)."""
        return timm.create_model(self.model, **(dict(kwargs, attn=self.attn) if self.attn else kwargs))

    def set_impl(self, model: nn.Module) -> nn.Module:
        """``model`` with ``mrap_impl`` set on every MRAP (when given)."""
        from timm_mrap.layers import MRAP
        for module in model.modules():
            if isinstance(module, MRAP) and self.mrap_impl:
                module.impl = self.mrap_impl
        return model


def parse_variants(specs: Sequence[str]) -> List[Variant]:
    """``'model'``, ``'model:attn'`` or ``'model:attn:impl'`` strings to variants; unknown names are a clear error."""
    import timm_mrap  # noqa: F401  registers our models
    from timm_mrap.layers import ATTN_CHOICES
    from timm_mrap.layers.config import MRAP_IMPLS
    variants = []
    for spec in specs:
        model, _, rest = spec.partition(':')
        attn, _, impl = rest.partition(':')
        if not timm.is_model(model):
            raise ValueError(f'Unknown model {model!r} in variant {spec!r}; see timm.list_models().')
        if attn and attn not in ATTN_CHOICES:
            raise ValueError(f'Unknown attn {attn!r} in variant {spec!r}; choose one of {ATTN_CHOICES}.')
        if impl and (impl not in MRAP_IMPLS or attn != 'mrap'):
            raise ValueError(f'Bad MRAP impl in variant {spec!r}: use model:mrap:IMPL with IMPL one of {MRAP_IMPLS}.')
        variants.append(Variant(model, attn or None, impl or None))
    if len(set(variants)) != len(variants):
        raise ValueError(f'Variants repeat: {list(specs)}; list each once.')
    return variants


def parse_setting(spec: str) -> Tuple[str, str, str, int]:
    """``'precision:runtime:mode:batch'`` to a tuple, with a clear error for anything else."""
    parts = spec.split(':')
    if len(parts) != 4 or parts[0] not in PRECISIONS or parts[1] not in RUNTIMES or parts[2] not in MODES \
            or not parts[3].isdigit() or int(parts[3]) < 1:
        raise ValueError(f'Bad setting {spec!r}; write precision:runtime:mode:batch with precision in {PRECISIONS}, '
                         f'runtime in {RUNTIMES}, mode in {MODES}, e.g. bf16:eager:train:32.')
    return parts[0], parts[1], parts[2], int(parts[3])


@dataclass
class BenchmarkConfig:
    """What to measure. Lists multiply: every device x precision x runtime x mode x batch size is one setting, unless
    ``settings`` lists them explicitly."""
    variants: Sequence[str] = DEFAULT_VARIANTS
    baseline: Optional[str] = None  # variant label the ratios refer to; default: the first variant
    devices: Sequence[str] = ('cpu',)
    precisions: Sequence[str] = ('fp32',)
    runtimes: Sequence[str] = ('eager',)
    modes: Sequence[str] = MODES
    infer_batch_sizes: Sequence[int] = (1, 32)
    train_batch_sizes: Sequence[int] = (32,)
    img_size: int = 224
    num_classes: int = 1000
    warmup: int = 2
    repeats: int = 7
    iters: int = 1
    threads: Optional[int] = None
    channels_last: bool = False
    seed: int = 0
    # explicit 'precision:runtime:mode:batch' settings (e.g. STANDARD_SETTINGS) instead of the product of the lists
    settings: Optional[Sequence[str]] = None

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the fix for anything that cannot be measured as configured."""
        bad = [m for m in self.modes if m not in MODES] + [p for p in self.precisions if p not in PRECISIONS]
        bad += [r for r in self.runtimes if r not in RUNTIMES]
        if bad:
            raise ValueError(f'Unknown modes / precisions / runtimes {bad}; modes are {MODES}, precisions '
                             f'{PRECISIONS}, runtimes {RUNTIMES}.')
        for spec in self.settings or ():
            parse_setting(spec)
        for d in self.devices:
            if torch.device(d).type == 'cuda' and not torch.cuda.is_available():
                raise ValueError(f'Device {d!r} asked for but CUDA is not available; use --device cpu.')
        if min(self.repeats, self.iters) < 1 or self.warmup < 0 or self.img_size < 1:
            raise ValueError('repeats and iters must be >= 1, warmup >= 0 and img_size >= 1.')
        if any(b < 1 for b in list(self.infer_batch_sizes) + list(self.train_batch_sizes)):
            raise ValueError('Batch sizes must be >= 1.')
