from .mobilenet_mrap import ATTN_CHOICES, resolve_attn
