"""Shared test helpers: the reference fixtures live in tests/fixtures/reference (see tests/fixtures/README.md)."""
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Tuple

# Without a GPU, MRAP's Triton kernels run on CPU tensors through Triton's interpreter. Triton reads this switch when
# its language module is first imported (importing torch can do that), so it is set before anything else.
if not os.path.exists('/dev/nvidiactl'):
    os.environ.setdefault('TRITON_INTERPRET', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
# On GPUs, float32 convolutions may run in TF32 (10-bit mantissa) by default; the tests compare float32 math
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
# the GPU where there is one (the Triton kernels run there), else CPU (Triton's kernels through its interpreter)
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = ROOT / 'tests' / 'fixtures'
REFERENCE_DIR = Path(os.environ.get('TIMM_MRAP_FIXTURES', FIXTURES_DIR / 'reference'))


def load_script(path: Path):
    """A Python file that is not in a package (a tool, the fixtures' script) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_fixture(name: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors (float16 weights cast to float32) and metadata of ``<name>.safetensors``."""
    from safetensors import safe_open
    path = REFERENCE_DIR / f'{name}.safetensors'
    if not path.exists():
        pytest.fail(f'Reference fixture {path} is missing: {REFERENCE_DIR} should hold the slim copies that '
                    f'tests/fixtures/slim_reference.py writes (set TIMM_MRAP_FIXTURES to read another folder).')
    with safe_open(str(path), 'pt') as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return tensors, meta


def fixture_state_dict(tensors: Dict[str, torch.Tensor], prefix: str = 'state_dict.') -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def fixture_json(meta: Dict[str, str], key: str):
    return json.loads(meta[key])


@pytest.fixture
def reference_dir() -> Path:
    return REFERENCE_DIR


def attention_from_fixture(name: str, build) -> Tuple[torch.nn.Module, Dict[str, torch.Tensor]]:
    """An attention module built by ``build(meta)`` with the weights of module fixture ``name`` (timm key names)."""
    from timm_mrap.convert import ATTN_PARAM_KEYS
    tensors, meta = load_fixture(name)
    module = build(meta)
    module.load_state_dict(_to_timm_attention_keys(fixture_state_dict(tensors), ATTN_PARAM_KEYS))
    return module, tensors


def _to_timm_attention_keys(state_dict: Dict[str, torch.Tensor], key_map: Dict[str, str]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        ref = next(r for r in key_map if k.startswith(r))
        out[key_map[ref] + k[len(ref):]] = v
    return out


def assert_matches_fixture_eval(
        module: torch.nn.Module, t: Dict[str, torch.Tensor], atol: float = 1e-5, device: str = 'cpu') -> None:
    with torch.no_grad():
        out = module.to(device).eval()(t['input'].to(device)).cpu()
    torch.testing.assert_close(out, t['output_eval'], atol=atol, rtol=1e-5)


def assert_matches_fixture_train(
        module: torch.nn.Module, t: Dict[str, torch.Tensor], atol: float = 1e-5, device: str = 'cpu') -> None:
    """Training-mode output, input gradient and every parameter gradient of ``sum(output * probe)``, run on
    ``device``."""
    from timm_mrap.convert import ATTN_PARAM_KEYS
    module = module.to(device)
    x = t['input'].to(device).requires_grad_()
    out = module.train()(x)
    torch.testing.assert_close(out.cpu(), t['output_train'], atol=atol, rtol=1e-5)
    (out * t['probe'].to(device)).sum().backward()
    torch.testing.assert_close(x.grad.cpu(), t['grad_input_train'], atol=atol, rtol=1e-4)
    grads = {n: p.grad.cpu() for n, p in module.named_parameters()}
    ref_grads = _to_timm_attention_keys(
        {k[len('grad.'):]: v for k, v in t.items() if k.startswith('grad.')}, ATTN_PARAM_KEYS)
    assert set(grads) == set(ref_grads)
    for n, g in grads.items():
        torch.testing.assert_close(g, ref_grads[n], atol=1e-4, rtol=1e-4, msg=f'gradient of {n}')


def fill_hub_cache(hub_cache: Path, repo_id: str, folder: Path, revision: str = 'a' * 40) -> Path:
    """Lay ``folder`` out as Hub repo ``repo_id`` in a huggingface_hub cache (snapshot + refs/main), as downloads do."""
    snapshot = hub_cache / f"models--{repo_id.replace('/', '--')}" / 'snapshots' / revision
    shutil.copytree(folder, snapshot)
    refs = snapshot.parents[1] / 'refs'
    refs.mkdir(exist_ok=True)
    (refs / 'main').write_text(revision)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache that huggingface_hub reads in this process, with HF_HUB_OFFLINE=1 (nothing is downloaded)."""
    import huggingface_hub.constants
    hub_cache = tmp_path / 'hf_home' / 'hub'
    hub_cache.mkdir(parents=True)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)  # read once at import: patch it too
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(hub_cache))
    return hub_cache
