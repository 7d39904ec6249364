"""Hugging Face Hub support: export trained weights with a model card, push them, load them with pretrained=True.

Library functions here; the command line is ``python -m timm_mrap.hub export | push`` (see ``__main__``).
"""
from .pretrained import WeightsNotPublishedError, explain_unpublished_weights
from .cards import (
    CardError, ModelStats, architecture_card, measure_model, read_results, render_card, stale_cards, write_cards,
)
from .export import ExportError, ExportResult, default_repo_id, export_model, read_checkpoint, read_label_names
from .push import PushError, check_export_folder, push_folder
