"""Training and evaluation: the timm-script launcher, the built-in trainer / validator, recipes and data tools."""
