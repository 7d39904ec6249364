""" Swap the SE-style attention of any timm CNN for MRAP (or another attention) on the same channels

timm builds its attention CNNs with a handful of channel-attention modules: EfficientNet / MobileNetV3 blocks use
``SqueezeExcite`` (``timm.models._efficientnet_blocks``), SE-ResNet and RegNetY use ``SEModule``, VoVNet uses
``EffectiveSEModule``, ECA-ResNet uses ``EcaModule`` and ResNets built with ``attn_layer='cbam'`` use ``CbamModule``;
the other lightweight layers of timm's ``get_attn`` and SimAM are recognised too. ``swap_attention`` replaces every
such module, wherever it sits, with a freshly initialised attention (any of ``ATTN_CHOICES``) on the same channels, so
any of those networks gets MRAP without a new model definition. With ``empty_slots=True`` it also fills the empty
``se`` slot of timm's EfficientNet / MobileNet blocks, so networks built without attention (``mobilenetv2_100``) get one
where the MobileNetV3 / EfficientNet family puts it: after the depthwise conv. Models that do take an ``se_layer``
argument (EfficientNet) can also be built with it directly; ``swap_attention`` covers the ones that cannot
(``se_layer`` fixed by the entrypoint, or no such argument).

Most modules store their channel count in a conv; ECA does not (its 1D conv runs across channels), so it is read from
the last conv or norm layer registered before the module in its parent block, which is the layer that produces its
input in every timm block that uses ECA.
"""
import inspect
from typing import Callable, Dict, List, Optional, Tuple, Type

from torch import nn

from timm.layers import CecaModule, EcaModule, EffectiveSEModule, GatherExcite, GlobalContext, SEModule
from timm.layers.cbam import CbamModule, LightCbamModule
from timm.layers.coord_attn import CoordAttn, EfficientLocalAttn, SimpleCoordAttn, StripAttn
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, EdgeResidual, InvertedResidual, SqueezeExcite

from .layers import MAFC, MRAP, GatherExciteMlp, SimAM
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
    GatherExcite: lambda m: None,
    GatherExciteMlp: lambda m: m.mlp.fc1.in_channels,
    GlobalContext: lambda m: (m.mlp_scale or m.mlp_add).fc1.in_channels,
    CoordAttn: lambda m: m.conv1.in_channels,
    SimpleCoordAttn: lambda m: m.fc1.in_features,
    EfficientLocalAttn: lambda m: m.conv_h.in_channels,
    StripAttn: lambda m: m.conv_h.in_channels if m.use_conv else None,
    SimAM: lambda m: None,
    MRAP: lambda m: m.fc2.out_features,
    MAFC: lambda m: m.fc2.out_features,
}
# timm's blocks whose ``se`` slot is always there (``nn.Identity`` when empty), after the depthwise conv
SLOT_BLOCKS = (DepthwiseSeparableConv, InvertedResidual, EdgeResidual)


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


def _is_empty_slot(model: nn.Module, name: str, module: nn.Module) -> bool:
    parent_name, _, child_name = name.rpartition('.')
    return (child_name == 'se' and isinstance(module, nn.Identity)
            and isinstance(model.get_submodule(parent_name), SLOT_BLOCKS))


def find_attention(model: nn.Module, empty_slots: bool = False) -> List[Tuple[str, nn.Module, int]]:
    """Every swappable attention module of ``model`` as ``(name, module, channels)``, in module order.

    Args:
        model: Any module.
        empty_slots: Also list the empty ``se`` slots (``nn.Identity``) of timm's EfficientNet / MobileNet blocks.

    Raises:
        ValueError: A module whose channel count can be neither read nor found from the layer before it.
    """
    found = []
    for name, module in model.named_modules():
        read = SWAPPABLE.get(type(module))
        if read is None and empty_slots and _is_empty_slot(model, name, module):
            read = lambda m: None  # noqa: E731  the block's layer before the slot tells the channels
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


def _takes(layer: Callable[..., nn.Module], arg: str) -> bool:
    params = inspect.signature(layer).parameters.values()
    return any(p.name == arg or p.kind is p.VAR_KEYWORD for p in params)


def swap_attention(model: nn.Module, attn: str = 'mrap', empty_slots: bool = False, **attn_kwargs) -> nn.Module:
    """Replace every SE-style attention module of a timm CNN with ``attn`` on the same channels (in place).

    The new modules are freshly initialised on the device / dtype and in the train / eval mode of the ones they
    replace; every other parameter is untouched. A state dict of the result loads into a model built and swapped the
    same way.

    Args:
        model: A timm model (or any module) holding any of ``SWAPPABLE`` (timm's ``SqueezeExcite``, ``SEModule``,
            ``EcaModule``, ``CbamModule``, ``CoordAttn``..., or this package's ``MRAP``, ``MAFC``, ``SimAM``).
        attn: One of ``ATTN_CHOICES``, with the same layers and reduction ratios as the registered models' ``attn``
            argument; ``'none'`` removes the attention (``nn.Identity``).
        empty_slots: Also fill the empty ``se`` slots of timm's EfficientNet / MobileNet blocks (``mobilenetv2_100``).
        **attn_kwargs: Passed to the attention layer, e.g. ``pool_types`` / ``rate`` for MRAP or ``rd_ratio``.

    Returns:
        ``model``, with its attention swapped.

    Raises:
        ValueError: An unknown ``attn`` or bad MRAP arguments, or a model with no attention module to swap.
        TypeError: An argument the attention layer does not take (the message lists those it does).
    """
    kwargs = dict(attn_kwargs)
    layer, rd_ratio = resolve_attn(attn, kwargs.pop('pool_types', None), kwargs.pop('rate', None))
    if layer is not None and _takes(layer, 'rd_ratio'):
        kwargs.setdefault('rd_ratio', rd_ratio)
    found = find_attention(model, empty_slots)
    if not found:
        kinds = ', '.join(t.__name__ for t in SWAPPABLE)
        raise ValueError(
            f'{type(model).__name__} has no attention module to swap (looked for {kinds}). swap_attention adds '
            f'attention only to the empty se slots of timm\'s EfficientNet / MobileNet blocks (empty_slots=True, '
            f'e.g. mobilenetv2_100); elsewhere pick an attention variant of the family (e.g. seresnet18 rather than '
            f'resnet18), or build models that take an se_layer with se_layer=MRAP.')
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
