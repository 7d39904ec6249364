from .mafc import MAFC
from .mrap import MRAP, POOL_TYPES, interleave, pool_statistic, split_top_n
