"""Deployment: input checks and export to ONNX, ExecuTorch, Core ML and LiteRT (optional deps imported lazily).

The command line is ``python -m timm_mrap.deploy`` (also ``python -m timm_mrap.export``, see ``__main__``).
"""
from .accuracy import top1_accuracy
from .calibration import calibration_batches
from .extras import require
from .formats import FORMATS, SUFFIXES, check_export, export_model, runtime_predictor
from .inputs import add_model_arguments, check_input, min_input_size, model_in_chans, model_stride, output_path
from .onnx import EXPORTERS, export_onnx, onnx_parity
