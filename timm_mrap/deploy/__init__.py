"""Deployment: input / checkpoint checks and export to ONNX, ExecuTorch, Core ML and LiteRT (optional deps imported
lazily)."""
from .accuracy import top1_accuracy
from .calibration import calibration_batches
from .checks import (
    CheckpointError, add_model_arguments, check_input, load_model, min_input_size, model_in_chans, model_stride,
)
from .extras import MissingExtraError, require
from .formats import FORMATS, SUFFIXES, check_export, export_model, runtime_predictor
from .onnx import EXPORTERS, export_onnx, onnx_parity
