"""timm-mrap: MRAP / MAFC channel-spatial attention and the MobileNets that use them, as a timm plugin.

``import timm_mrap`` registers the models with timm, so ``timm.create_model('mobilenetv2_mrap')`` works.
"""
from .version import __version__
from .layers import MAFC, MRAP
from .models import ATTN_CHOICES
from .swap import find_attention, swap_attention
