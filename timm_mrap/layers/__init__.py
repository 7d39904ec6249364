from .config import MRAP_IMPLS, get_mrap_impl, set_mrap_impl
from .mafc import MAFC
from .mrap import MRAP, POOL_TYPES, interleave, pool_statistic, split_top_n
from .create_attn import ATTN_CHOICES, resolve_attn
