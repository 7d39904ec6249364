"""Deployment: input checks and export to ONNX, ExecuTorch, Core ML and LiteRT (optional deps imported lazily).

The command line is ``python -m timm_mrap.deploy`` (see ``__main__``).
"""
from .data import calibration_batches, image_dataset, top1_accuracy
from .formats import FORMATS, SUFFIXES, check_export, compare_with_torch, export_model, require, runtime_predictor
from .inputs import add_model_arguments, check_input, model_in_chans, model_stride, output_path
from .onnx import EXPORTERS, export_onnx, load_onnx, onnx_parity
