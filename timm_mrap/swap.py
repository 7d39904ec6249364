""" Swap the SE-style attention of any timm CNN for MRAP (or another attention) on the same channels

timm builds its attention CNNs with a handful of channel-attention modules: EfficientNet / MobileNetV3 blocks use
``SqueezeExcite`` (``timm.models._efficientnet_blocks``), SE-ResNet and RegNetY use ``SEModule``, VoVNet uses
``EffectiveSEModule``, ECA-ResNet uses ``EcaModule`` and ResNets built with ``attn_layer='cbam'`` use ``CbamModule``.
``swap_attention`` replaces every such module, wherever it sits, with a freshly initialised attention on the same
channels, so any of those networks gets MRAP without a new model definition. Models that do take an ``se_layer``
argument (EfficientNet) can also be built with it directly; ``swap_attention`` covers the ones that cannot
(``se_layer`` fixed by the entrypoint, or no such argument).

Most modules store their channel count in a conv; ECA does not (its 1D conv runs across channels), so it is read from
the last conv or norm layer registered before the module in its parent block, which is the layer that produces its
input in every timm block that uses ECA.
"""
from typing import Callable, Dict, List, Optional, Tuple, Type

from torch import nn

from timm.layers import CecaModule, EcaModule, EffectiveSEModule, SEModule
from timm.layers.cbam import CbamModule, LightCbamModule
from timm.models._efficientnet_blocks import SqueezeExcite

from .layers import MAFC, MRAP
from .layers import resolve_attn

__all__ = ['SWAPPABLE', 'find_attention', 'swap_attention']


# attention module type -> its channel count (None: the module does not store it)
SWAPPABLE: Dict[Type[nn.Module], Callable[[nn.Module], Optional[int]]] = {
    SqueezeExcite: lambda m: m.conv_reduce.in_channels,
    SEModule: lambda m: m.fc1.in_channels,
    EffectiveSEModule: lambda m: m.fc.in_channels,
    CbamModule: lambda m: m.channel.fc1.in_channels,
    LightCbamModule: lambda m: m.channel.fc1.in_channels,
    EcaModule: lambda m: None,
    CecaModule: lambda m: None,
    MRAP: lambda m: m.fc2.out_features,
    MAFC: lambda m: m.fc2.out_features,
}


def _output_channels(module: nn.Module) -> Optional[int]:
    """Channels produced by ``module``: those of its last registered conv or norm layer (None if it has none)."""
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.out_channels
        if isinstance(m, nn.modules.batchnorm._NormBase):
            return m.num_features
        if isinstance(m, nn.GroupNorm):
            return m.num_channels
    return None


def _channels_before(parent: nn.Module, child_name: str) -> Optional[int]:
    """Channels of the last conv / norm layer registered before ``parent.<child_name>``."""
    names = list(parent._modules)
    for name in reversed(names[:names.index(child_name)]):
        sibling = parent._modules[name]
        channels = _output_channels(sibling) if sibling is not None else None
        if channels is not None:
            return channels
    return None


def find_attention(model: nn.Module) -> List[Tuple[str, nn.Module, int]]:
    """Every swappable attention module of ``model`` as ``(name, module, channels)``, in module order.

    Raises:
        ValueError: A module whose channel count can be neither read nor found from the layer before it.
    """
    found = []
    for name, module in model.named_modules():
        read = SWAPPABLE.get(type(module))
        if read is None:
            continue
        channels = read(module)
        if channels is None:
            parent_name, _, child_name = name.rpartition('.')
            parent = model.get_submodule(parent_name)
            channels = _channels_before(parent, child_name)
            if channels is None:
                raise ValueError(
                    f'Cannot tell how many channels {name} ({type(module).__name__}) sees: the module does not store '
                    f'them and no conv or norm layer is registered before it in {type(parent).__name__}.')
        found.append((name, module, channels))
    return found


def swap_attention(model: nn.Module, attn: str = 'mrap', **attn_kwargs) -> nn.Module:
    """Replace every SE-style attention module of a timm CNN with ``attn`` on the same channels (in place).

    The new modules are freshly initialised on the device / dtype and in the train / eval mode of the ones they
    replace; every other parameter is untouched. A state dict of the result loads into a model built and swapped the
    same way.

    Args:
        model: A timm model (or any module) holding timm's ``SqueezeExcite``, ``SEModule``, ``EffectiveSEModule``,
            ``EcaModule`` / ``CecaModule``, ``CbamModule`` / ``LightCbamModule``, or this package's ``MRAP`` / ``MAFC``.
        attn: One of ``ATTN_CHOICES`` (``'mrap'``, ``'mafc'``, ``'se'``, ``'eca'``, ``'cbam'``, ``'none'``), with
            the same layers and reduction ratios as the registered models' ``attn`` argument; ``'none'`` removes the
            attention (``nn.Identity``).
        **attn_kwargs: Passed to the attention layer, e.g. ``pool_types`` / ``rate`` for MRAP or ``rd_ratio``.

    Returns:
        ``model``, with its attention swapped.

    Raises:
        ValueError: An unknown ``attn`` or bad MRAP arguments, or a model with no attention module to swap.
        TypeError: An argument the attention layer does not take (the message lists those it does).
    """
    kwargs = dict(attn_kwargs)
    layer, rd_ratio = resolve_attn(attn, kwargs.pop('pool_types', None), kwargs.pop('rate', None))
    kwargs.setdefault('rd_ratio', rd_ratio)
    found = find_attention(model)
    if not found:
        kinds = ', '.join(t.__name__ for t in SWAPPABLE)
        raise ValueError(
            f'{type(model).__name__} has no attention module to swap (looked for {kinds}). swap_attention adds no '
            f'attention where the network has none; pick an attention variant of the family (e.g. seresnet18 '
            f'rather than resnet18), or build models that take an se_layer with se_layer=MRAP.')
    for name, module, channels in found:
        if layer is None:
            new = nn.Identity()
        else:
            ref = next(iter(module.parameters()), None)
            dd = {'device': ref.device, 'dtype': ref.dtype} if ref is not None else {}
            new = layer(channels, **kwargs, **dd)
        new.train(module.training)
        model.set_submodule(name, new)
    return model
