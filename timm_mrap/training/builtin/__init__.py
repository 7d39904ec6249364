"""The built-in twin of timm's ``train.py`` / ``validate.py``: the same flags and output layout, assembled from timm's
library, for machines where those scripts cannot be had. Input checks are shared with the launcher
(``timm_mrap.training.input_checks``)."""
