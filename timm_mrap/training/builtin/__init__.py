"""The built-in twins of timm's ``train.py`` / ``validate.py``: the same flags and output layout."""
