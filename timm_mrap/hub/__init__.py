"""Hugging Face Hub support: Hub folders with a model card, pushed to the Hub, loaded with pretrained=True; the
command line is ``python -m timm_mrap.hub prepare | push | cards``."""
from ..errors import CardError, HubFolderError, PushError
from .cards import ModelStats, architecture_card, measure_model, read_results, render_card, stale_cards, write_cards
from .folder import HubFolderResult, default_repo_id, read_label_names, write_hub_folder
from .push import check_hub_folder, push_folder
