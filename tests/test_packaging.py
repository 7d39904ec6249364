"""The package as a user installs it: a wheel built from the source tree, installed away from the clone, runs the
Hub export from its own data files (card template, recipes, class lists) and reports one version everywhere."""
import email
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import timm
import timm_mrap

ROOT = Path(__file__).resolve().parents[1]
# what a source tree holds besides the package (and what a build leaves behind): not copied for the build
_NOT_SOURCE = ('.git', '.venv', 'output', 'runs', 'build', 'dist', '*.egg-info', '__pycache__', '.pytest_cache')


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    return proc


def test_changelog_has_the_package_version():
    changelog = (ROOT / 'CHANGELOG.md').read_text()
    first_entry = next(line for line in changelog.splitlines() if line.startswith('## '))
    assert first_entry.startswith(f'## {timm_mrap.__version__}')
    assert 'Apache License' in (ROOT / 'LICENSE').read_text() and 'Version 2.0' in (ROOT / 'LICENSE').read_text()


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """``pip wheel .`` of a copy of the source tree (the build writes build/ and *.egg-info into its source)."""
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    env = {**os.environ, 'PIP_NO_INDEX': '1', 'PIP_DISABLE_PIP_VERSION_CHECK': '1'}
    _run([sys.executable, '-m', 'pip', 'wheel', str(src), '--no-deps', '--no-build-isolation', '-q',
          '-w', str(tmp / 'dist')], env=env)
    wheels = list((tmp / 'dist').glob('timm_mrap-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_carries_data_files_and_license(wheel):
    assert wheel.name.startswith(f'timm_mrap-{timm_mrap.__version__}-py3-none-any')
    package = ROOT / 'timm_mrap'
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f'timm_mrap-{timm_mrap.__version__}.dist-info'
        metadata = email.message_from_string(zf.read(f'{dist_info}/METADATA').decode())
        licenses = [n for n in names if n.startswith(dist_info) and n.rsplit('/', 1)[-1] == 'LICENSE']
        assert len(licenses) == 1, sorted(n for n in names if n.startswith(dist_info))
        assert zf.read(licenses[0]).decode() == (ROOT / 'LICENSE').read_text()
    data_files = [p for pattern in ('training/recipes/*.yaml', 'training/class_lists/*.txt', 'hub/card_template.md',
                                    'py.typed') for p in package.glob(pattern)]
    assert len(data_files) >= 8
    missing = [str(p.relative_to(ROOT)) for p in data_files if str(p.relative_to(ROOT)) not in names]
    assert missing == [], f'not in the wheel: {missing}; list them in setup.cfg [options.package_data]'
    modules = {str(p.relative_to(ROOT)) for p in package.rglob('*.py')}
    assert modules <= names, sorted(modules - names)
    assert not [n for n in names if n.startswith(('tests/', 'hf_cards/', 'docs/'))]
    assert metadata['Version'] == timm_mrap.__version__ and metadata['Name'] == 'timm-mrap'
    assert 'Apache-2.0' in (metadata.get('License') or '') + (metadata.get('License-Expression') or '')


@pytest.mark.slow
def test_installed_wheel_exports_a_card_without_the_clone(wheel, tmp_path):
    """Installed into a bare target folder and run from outside the clone: the export renders the packaged card."""
    site = tmp_path / 'site'
    _run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', '--target', str(site), str(wheel)])
    torch.manual_seed(0)
    model = timm.create_model('mobilenetv1_mrap', num_classes=4)
    from safetensors.torch import save_file
    save_file(model.state_dict(), tmp_path / 'weights.safetensors')
    work = tmp_path / 'elsewhere'
    work.mkdir()
    env = {**os.environ, 'PYTHONPATH': str(site), 'PYTHONSAFEPATH': '1', 'HF_HUB_OFFLINE': '1'}

    probe = _run([sys.executable, '-c', (
        'import json, timm_mrap, timm_mrap.hub.cards as cards\n'
        'from timm_mrap.training.recipes import list_recipes, recipe_path\n'
        'from timm_mrap.training.datasets import read_class_list\n'
        'print(json.dumps({"file": timm_mrap.__file__, "cards": cards.__file__, "version": timm_mrap.__version__, '
        '"recipes": list_recipes(), "demo": str(recipe_path("digits_demo")), "rein100": len(read_class_list('
        '"rein100")), "template": len(cards.card_template())}))')], cwd=work, env=env)
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(found['file']).is_relative_to(site) and Path(found['cards']).is_relative_to(site), found
    assert Path(found['demo']).is_relative_to(site) and 'digits_demo' in found['recipes']
    assert found['rein100'] == 100 and found['template'] > 1000 and found['version'] == timm_mrap.__version__

    version = _run([sys.executable, '-m', 'timm_mrap.hub', '--version'], cwd=work, env=env)
    assert version.stdout.strip() == f'timm-mrap {timm_mrap.__version__}'

    out = tmp_path / 'export'
    export = _run([sys.executable, '-m', 'timm_mrap.hub', 'prepare', str(tmp_path / 'weights.safetensors'),
                   '--out', str(out), '--model', 'mobilenetv1_mrap', '--tag', 'digits', '--dataset', 'digits',
                   '--repo-id', 'someone/mobilenetv1_mrap.digits', '--img-size', '64'], cwd=work, env=env)
    assert 'Wrote' in export.stdout
    card = (out / 'README.md').read_text()
    assert '{{' not in card and '# Model card for mobilenetv1_mrap.digits' in card
    assert f'- **Package:** timm-mrap {timm_mrap.__version__} ' in card
    assert 'registers mobilenetv1_mrap with timm' in card and '(13 depthwise-separable units' in card
    assert f'({sum(p.numel() for p in model.parameters()):,} parameters)' in card
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
