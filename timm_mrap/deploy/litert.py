""" LiteRT (TensorFlow Lite) export through litert-torch (the optional ``litert`` extra), run by LiteRT's interpreter

The conversion takes litert-torch's TFLite decompositions, so MRAP's top-n sort becomes LiteRT's ``TOPK_V2`` builtin
(docs/deployment.md).
"""
import os
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from .formats import Predictor, require

__all__ = ['load_litert', 'write_litert']


def write_litert(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Convert ``model`` (fp32, static NCHW input of ``example``'s shape) to a LiteRT ``.tflite`` file at ``path``."""
    require('litert_torch', 'litert', 'litert-torch')
    import litert_torch
    with mock.patch.dict(os.environ, {'LITERT_TORCH_FULL_TFL_DECOMPS': '1'}):  # restores the variable afterwards
        edge_model = litert_torch.convert(model, (example,))
    edge_model.export(str(path))


def load_litert(tflite_file: str) -> Predictor:
    """A function from a batch to the logits of the ``.tflite`` file, run by LiteRT's interpreter."""
    require('ai_edge_litert', 'litert', 'ai-edge-litert')
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(tflite_file))
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]['index']
    output_index = interpreter.get_output_details()[0]['index']

    def predict(x: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(input_index, x.numpy())
        interpreter.invoke()
        return torch.from_numpy(interpreter.get_tensor(output_index).copy())
    return predict
