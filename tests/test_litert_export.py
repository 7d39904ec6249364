"""LiteRT export: the real conversion and interpreter run where litert-torch installs (an environment of its own: it
pins typing-extensions below this project's constraints), else the clear error that names the extra."""
import importlib.util

import pytest

import timm_mrap  # noqa: F401  registers the models
from timm_mrap.deploy.__main__ import main as export_main

MODEL_ARGS = ['--model', 'mobilenetv3_small_mrap', '--num-classes', '10', '--img-size', '64']


def test_litert_export_or_a_clear_missing_extra_error(tmp_path, capsys):
    out = tmp_path / 'm.tflite'
    if importlib.util.find_spec('litert_torch') is None:
        with pytest.raises(SystemExit) as e:
            export_main(MODEL_ARGS + ['--format', 'litert', '--out', str(out)])
        assert e.value.code == 2
        assert 'pip install "timm-mrap[litert]"' in capsys.readouterr().err
        assert not out.exists()
    else:
        export_main(MODEL_ARGS + ['--format', 'litert', '--out', str(out)])
        assert ' ok' in capsys.readouterr().out
