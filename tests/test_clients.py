"""Clients that load timm models, on folders written by ``timm_mrap.hub`` export: Hugging Face transformers'
``AutoModelForImageClassification``, ``AutoModel``, ``AutoImageProcessor`` and the ``image-classification``
pipeline, offline. (Meta-device builds, the convention these clients use: tests/test_models.py.)"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import timm
from timm.data import create_transform, resolve_data_config
from timm_mrap.hub import write_hub_folder
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

FAMILIES = ['mobilenetv1_mrap', 'mobilenetv2_mrap', 'mobilenetv3_mrap', 'mobilenetv1_mafc']
IMG = 64
LABELS = ['cat', 'dog', 'fox']
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """No test may reach the real Hub: huggingface_hub reads this at call time."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')


def _inputs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


def _image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope='module', params=FAMILIES)
def exported(request, tmp_path_factory):
    """A 3-class model of each family with random weights, exported by ``timm_mrap.hub`` as a user would."""
    from safetensors.torch import save_file
    name, tmp = request.param, tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=len(LABELS)).eval()
    torch.nn.init.normal_(model.get_classifier().bias)  # a trained-looking bias, unlike timm's zero init
    save_file(model.state_dict(), tmp / 'weights.safetensors')
    write_hub_folder(tmp / 'weights.safetensors', tmp / 'export', model_name=name, tag='animals',
                 repo_id=f'someone/{name}.animals', dataset='three animals', label_names=LABELS,
                 data_config={'img_size': IMG, 'crop_pct': 1.0})
    return SimpleNamespace(name=name, model=model, folder=tmp / 'export')


def test_config_is_in_timms_shape(exported):
    config = json.loads((exported.folder / 'config.json').read_text())
    assert config['architecture'] == exported.name and config['num_classes'] == len(LABELS)
    assert 'model_args' not in config  # default architecture arguments: nothing to pass


def test_auto_model_for_image_classification_matches_timm(exported):
    model = AutoModelForImageClassification.from_pretrained(exported.folder).eval()
    assert model.config.id2label == dict(enumerate(LABELS))
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=_inputs()).logits, exported.model(_inputs()), rtol=0, atol=ATOL)

    backbone = AutoModel.from_pretrained(exported.folder).eval()  # no classifier: timm's pre-logits features
    with torch.no_grad():
        features = exported.model.forward_head(exported.model.forward_features(_inputs()), pre_logits=True)
        torch.testing.assert_close(backbone(pixel_values=_inputs()).pooler_output, features, rtol=0, atol=ATOL)


def test_image_processor_and_pipeline_match_timm(exported):
    image = _image()
    loaded = timm.create_model(f'local-dir:{exported.folder}', pretrained=True).eval()
    timm_pixels = create_transform(**resolve_data_config(model=loaded))(image).unsqueeze(0)
    assert timm_pixels.shape == (1, 3, IMG, IMG)

    processor = AutoImageProcessor.from_pretrained(exported.folder)
    torch.testing.assert_close(processor(image, return_tensors='pt')['pixel_values'], timm_pixels, rtol=0, atol=0)

    classifier = pipeline('image-classification', model=str(exported.folder), device='cpu')
    with torch.no_grad():
        probs = exported.model(timm_pixels).softmax(-1)[0]
    result = classifier(image, top_k=len(LABELS))
    expected = sorted(zip(LABELS, probs.tolist()), key=lambda p: -p[1])
    assert [r['label'] for r in result] == [label for label, _ in expected]
    np.testing.assert_allclose([r['score'] for r in result], [p for _, p in expected], rtol=0, atol=ATOL)
