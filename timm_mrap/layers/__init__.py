from .config import MRAP_IMPLS, get_mrap_impl, set_mrap_impl
from .mafc import MAFC
from .mrap import MRAP, POOL_TYPES, interleave, split_top_n
from .simam import SimAM
from .create_attn import ATTN_CHOICES, ATTN_LAYERS, GatherExciteMlp, resolve_attn
