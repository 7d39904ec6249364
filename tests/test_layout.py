"""The package's layout: imports only go down the layers below, with no cycles; ``import timm_mrap`` stays light."""
import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import pytest
import timm

import timm_mrap  # noqa: F401  registers the models

PACKAGE = Path(__file__).resolve().parents[1] / 'timm_mrap'

# Each part of the package and the parts it may import (besides the package root, which registers the models). A part
# is a sub-package or a top-level module; imports inside a part are free, but must not form cycles.
ALLOWED = {
    'version': set(),
    'errors': set(),
    'layers': {'errors'},
    'models': {'layers', 'errors'},
    'complexity': set(),
    'swap': {'layers'},
    'checkpoint': {'models', 'errors'},
    'convert': {'checkpoint', 'errors'},
    'hub': {'checkpoint', 'complexity', 'convert', 'errors', 'models', 'version'},
    'deploy': {'checkpoint', 'errors', 'layers'},
    'attention_maps': {'checkpoint', 'deploy', 'errors', 'layers'},
    'benchmark': {'complexity', 'deploy', 'errors', 'layers'},
    'training': {'checkpoint', 'complexity', 'convert', 'errors', 'layers', 'benchmark'},
    'compare': {'layers', 'training'},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path, module: str) -> Set[str]:
    """Every ``timm_mrap`` module that ``path`` imports, at any depth (function-level imports included)."""
    is_package = path.name == '__init__.py'
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split('.')[0] == 'timm_mrap')
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.')
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] != 'timm_mrap':
                continue
            found.add(target)
            for alias in node.names:  # `from . import mobilenet_mrap` imports a module
                if (PACKAGE.parent / target.replace('.', '/') / f'{alias.name}.py').exists():
                    found.add(f'{target}.{alias.name}')
    return found


def _graph() -> Dict[str, Set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in PACKAGE.rglob('*.py')}


def _part(module: str) -> str:
    return module.split('.')[1] if '.' in module else ''


def test_every_part_is_listed():
    parts = {_part(m) for m in _graph()} - {''}
    assert parts == set(ALLOWED), f'add these parts to ALLOWED, with the parts they may import: {parts ^ set(ALLOWED)}'


def test_imports_only_go_down():
    upward = []
    for module, imports in _graph().items():
        for target in imports:
            src, dst = _part(module), _part(target)
            if dst in ('', src) or (src == '' and dst in ('version', 'errors', 'layers', 'models', 'swap')):
                continue
            if dst not in ALLOWED[src]:
                upward.append(f'{module} imports {target}')
    assert not upward, 'imports outside the allowed layers:\n' + '\n'.join(sorted(upward))


def test_no_import_cycles():
    graph = {m: {t for t in imports if t != m} for m, imports in _graph().items()}
    graph = {m: {t for t in targets if t in graph and t != 'timm_mrap'} for m, targets in graph.items()}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(' -> '.join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_import_timm_mrap_loads_no_hub_export_or_benchmark_code():
    code = ('import sys, json, timm_mrap; '
            'print(json.dumps(sorted(m for m in sys.modules if m.startswith("timm_mrap"))))')
    loaded = json.loads(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                                       cwd=PACKAGE.parent).stdout)
    heavy = [m for m in loaded if _part(m) in ('hub', 'deploy', 'benchmark', 'training', 'export', 'convert',
                                               'checkpoint', 'compare', 'attention_maps', 'complexity')]
    assert 'timm_mrap.models.mobilenet_mrap' in loaded and not heavy, heavy


def test_config_json_holds_architecture_arguments_only(tmp_path, monkeypatch):
    """MRAP's implementation is a switch, not a model argument: timm's own save_for_hf writes what the model was built
    with, and a folder written under one implementation loads under another."""
    from timm.models import save_for_hf
    from timm_mrap.layers import config as mrap_config
    monkeypatch.setattr(mrap_config, '_MRAP_IMPL', 'triton')
    for name in ('mobilenetv2_mrap', 'mobilenetv3_mrap', 'mobilenetv1_mafc'):
        kwargs = {'pool_types': ('avg', 'std', 'max')} if 'v2' in name else {}
        model = timm.create_model(name, num_classes=3, **kwargs)
        assert isinstance(model, (timm.models.EfficientNet, timm.models.MobileNetV3))
        save_for_hf(model, str(tmp_path / name))
        config = json.loads((tmp_path / name / 'config.json').read_text())
        assert set(config.get('model_args', {})) <= {'num_classes', 'pool_types', 'in_chans', 'global_pool'}, config
        if 'v2' in name:  # architecture arguments are recorded
            assert config['model_args']['pool_types'] == ['avg', 'std', 'max']
        mrap_config.set_mrap_impl('reference')
        timm.create_model(f'local-dir:{tmp_path / name}', pretrained=True)
        mrap_config.set_mrap_impl('triton')


@pytest.mark.parametrize('name', ['mobilenetv1_mrap', 'mobilenetv2_mrap', 'mobilenetv3_mrap', 'mobilenetv3_mafc'])
def test_norm_layer_argument(name):
    """Every family takes timm's norm_layer argument (V3 used to raise a duplicate-keyword TypeError)."""
    from functools import partial
    from torch import nn
    model = timm.create_model(name, num_classes=3, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    assert model.bn1.eps == 1e-3 and all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                                         and m.num_features > 1)


def test_names_quoted_in_docstrings_exist():
    """Every ``timm_mrap.x.y`` a docstring or comment names can be imported (a moved name leaves no stale pointer)."""
    import importlib
    import re
    stale = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for ref in sorted(set(re.findall(r'`(timm_mrap(?:\.\w+)+)`', path.read_text()))):
            parts = ref.split('.')
            for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    obj = importlib.import_module('.'.join(parts[:i]))
                    break
                except ImportError:
                    continue
            for name in parts[i:]:
                obj = getattr(obj, name, None)
            if obj is None:
                stale.append(f'{path.relative_to(PACKAGE.parent)}: {ref}')
    assert not stale, 'names that do not exist:\n' + '\n'.join(stale)
