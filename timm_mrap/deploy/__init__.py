"""Deployment helpers: input / checkpoint checks and ONNX export (optional deps imported lazily)."""
from .checks import (
    CheckpointError, add_model_arguments, check_input, load_model, min_input_size, model_in_chans, model_stride,
)
from .onnx import EXPORTERS, export_onnx, onnx_parity
