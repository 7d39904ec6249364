"""timm-mrap: MRAP / MAFC channel-spatial attention and the MobileNets that use them, as a timm plugin.

``import timm_mrap`` registers the models with timm, so ``timm.create_model('mobilenetv2_mrap')`` works. It loads
the layers and the models only: the Hub, deployment, benchmark and training code load when imported.
"""
from .version import __version__
from .errors import TimmMrapError
from .layers import ATTN_CHOICES, MAFC, MRAP, resolve_attn
from . import models
from .swap import find_attention, swap_attention
