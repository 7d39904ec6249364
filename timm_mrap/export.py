""" ``python -m timm_mrap.export``: the first name of ``python -m timm_mrap.deploy``, kept for existing scripts """
from .deploy.__main__ import main

__all__ = ['main']

if __name__ == '__main__':
    main()
