from .mobilenet_mrap import ATTN_CHOICES, resolve_attn
from . import mobilenet_mafc
