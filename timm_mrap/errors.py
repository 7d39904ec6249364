""" The errors timm-mrap raises on purpose: each derives from ``TimmMrapError`` and from the builtin exception callers
catch (``ValueError``, ``FileNotFoundError``, ...); every message names the problem and the fix."""


class TimmMrapError(Exception):
    """Base of every error timm-mrap raises on purpose."""


class CheckpointError(TimmMrapError, ValueError):
    """A checkpoint that cannot be read, or whose weights do not fit the model they are loaded into."""


class ConversionError(CheckpointError):
    """An authors' reference checkpoint that does not convert to the requested model."""


class InputError(TimmMrapError, ValueError):
    """Bad input to training or validation (data folder, flags, checkpoint)."""


class CliError(InputError, RuntimeError):
    """Bad input to ``train.sh`` / ``validate.sh``."""


class DatasetError(TimmMrapError, ValueError):
    """A data set that cannot be prepared as asked (missing classes, bad source folder)."""


class ScriptNotFoundError(TimmMrapError, FileNotFoundError):
    """timm's ``train.py`` / ``validate.py`` / ``benchmark.py`` cannot be found or downloaded."""


class CompareError(TimmMrapError, ValueError):
    """A comparison grid that cannot run as configured."""


class HubFolderError(TimmMrapError, ValueError):
    """An input, option or output folder that cannot make a correct Hub folder."""


class CardError(TimmMrapError, ValueError):
    """A model card that cannot be written from the facts and results given."""


class PushError(TimmMrapError, ValueError):
    """A Hub folder or repository that must not be uploaded as asked."""


class WeightsNotPublishedError(TimmMrapError, FileNotFoundError):
    """Pretrained weights that the Hub does not have (yet), or that are not in the cache while offline."""


class MissingExtraError(TimmMrapError, ImportError):
    """An optional dependency (an extra such as ``timm-mrap[mobile]``) that is not installed."""
