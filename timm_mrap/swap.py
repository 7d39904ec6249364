""" Swap the SE-style attention of any timm CNN for MRAP (or another attention) on the same channels

A module of ``SWAPPABLE`` that does not store its channel count (ECA's 1D conv runs across channels) takes that of the
last conv or norm layer registered before it in its parent block, which produces its input.
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


def _channels_before(parent: nn.Module, child_name: str) -> Optional[int]:
    """Channels of the last conv / norm layer registered before ``parent.<child_name>`` (None if there is none)."""
    names = list(parent._modules)
    before = [m for n in names[:names.index(child_name)] if parent._modules[n] is not None
              for m in parent._modules[n].modules()]
    for m in reversed(before):
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.out_channels
        if isinstance(m, nn.modules.batchnorm._NormBase):
            return m.num_features
        if isinstance(m, nn.GroupNorm):
            return m.num_channels
    return None


def _is_empty_slot(model: nn.Module, name: str, module: nn.Module) -> bool:
    parent_name, _, child_name = name.rpartition('.')
    return (child_name == 'se' and isinstance(module, nn.Identity)
            and isinstance(model.get_submodule(parent_name), SLOT_BLOCKS))


def find_attention(model: nn.Module, empty_slots: bool = False) -> List[Tuple[str, nn.Module, int]]:
    """Every swappable attention module of ``model`` as ``(name, module, channels)``, in module order; with
    ``empty_slots``, also the empty ``se`` slots (``nn.Identity``) of timm's EfficientNet / MobileNet blocks.

    Raises:
        ValueError: A module whose channel count can be neither read nor found from the layer before it.
    """
    found = []
    for name, module in model.named_modules():
        empty_slot = empty_slots and _is_empty_slot(model, name, module)
        if type(module) not in SWAPPABLE and not empty_slot:
            continue
        channels = None if empty_slot else SWAPPABLE[type(module)](module)
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
    """Replace every SE-style attention module of a timm CNN with ``attn`` on the same channels, in place; returns
    ``model``.

    The new modules are freshly initialised on the device / dtype and in the train / eval mode of the ones they
    replace; every other parameter is untouched.

    Args:
        attn: One of ``ATTN_CHOICES`` (the layers and ratios of the registered models' ``attn``); ``'none'`` removes
            the attention.
        empty_slots: Also fill the empty ``se`` slots of timm's EfficientNet / MobileNet blocks (``mobilenetv2_100``).
        **attn_kwargs: Passed to the attention layer, e.g. ``pool_types`` / ``rate`` for MRAP or ``rd_ratio``.

    Raises:
        ValueError: An unknown ``attn`` or bad MRAP arguments, or a model with no attention module to swap.
        TypeError: An argument the attention layer does not take (the message lists those it does).
    """
    layer, rd_ratio = resolve_attn(attn, attn_kwargs.pop('pool_types', None), attn_kwargs.pop('rate', None))
    if layer is not None and _takes(layer, 'rd_ratio'):
        attn_kwargs.setdefault('rd_ratio', rd_ratio)
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
            new = layer(channels, **attn_kwargs, **dd)
        new.train(module.training)
        model.set_submodule(name, new)
    return model
