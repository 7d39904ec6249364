"""The timm-script launcher and script lookup: TIMM_SCRIPTS_DIR, cache, download (local server only), no shadowing."""
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import timm

from timm_mrap.training.scripts import ScriptNotFoundError, find_script, scripts_cache_dir, scripts_ref

INSTALLED_TIMM = str(Path(timm.__file__).resolve())

# a real script written against timm's public API: create one of our models, run it, report what it saw
PROBE_SCRIPT = '''
import json, os, sys
import timm, torch
if __name__ == '__main__':
    model = timm.create_model('mobilenetv2_mrap', num_classes=int(sys.argv[sys.argv.index('--num-classes') + 1]))
    out = model.eval()(torch.randn(1, 3, 32, 32))
    # one write per line: two ranks share the pipe, and an unbuffered print writes the newline separately
    sys.stdout.write('PROBE ' + json.dumps({'timm': os.path.realpath(timm.__file__), 'argv': sys.argv[1:],
                                            'shape': list(out.shape), 'marker': hasattr(timm, 'CHECKOUT_MARKER'),
                                            'rank': os.environ.get('RANK'),
                                            'registered': 'mobilenetv2_mrap' in timm.list_models()}) + '\\n')
    sys.stdout.flush()
'''


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No user scripts dir, a private cache, and downloads only where a test enables a local address."""
    monkeypatch.delenv('TIMM_SCRIPTS_DIR', raising=False)
    monkeypatch.delenv('TIMM_MRAP_CACHE_DIR', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    monkeypatch.setenv('TIMM_SCRIPTS_OFFLINE', '1')
    monkeypatch.setenv('TIMM_SCRIPTS_URL', 'http://127.0.0.1:9/unreachable')


def _probe_results(stdout: str):
    return [json.loads(line[len('PROBE '):]) for line in stdout.splitlines() if line.startswith('PROBE ')]


def _run_launcher(args, cwd, env_extra=None, module=('-m', 'timm_mrap.training.launch')):
    env = dict(os.environ, **(env_extra or {}))
    env.pop('PYTHONSAFEPATH', None)  # the launcher itself must cope with a cwd on sys.path
    return subprocess.run([sys.executable, *module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_scripts_dir_then_cache(tmp_path, monkeypatch):
    checkout = tmp_path / 'checkout'
    checkout.mkdir()
    (checkout / 'train.py').write_text('print("checkout")\n')
    monkeypatch.setenv('TIMM_SCRIPTS_DIR', str(checkout))
    assert find_script('train.py') == (checkout / 'train.py').resolve()
    assert find_script('train') == (checkout / 'train.py').resolve()
    with pytest.raises(ScriptNotFoundError, match='TIMM_SCRIPTS_DIR=.*has no validate.py.*timm checkout'):
        find_script('validate.py')

    monkeypatch.delenv('TIMM_SCRIPTS_DIR')
    cache = scripts_cache_dir()
    assert cache == tmp_path / 'cache' / 'timm_mrap' / 'scripts' / timm.__version__
    cache.mkdir(parents=True)
    (cache / 'validate.py').write_text('print("cached")\n')
    assert find_script('validate.py') == (cache / 'validate.py').resolve()
    with pytest.raises(ScriptNotFoundError) as e:
        find_script('benchmark.py')  # offline, not cached: the message lists every fix
    for fix in ('TIMM_SCRIPTS_DIR', f'--branch {scripts_ref()}', str(cache),
                'python -m timm_mrap.training.builtin.train'):
        assert fix in str(e.value)
    with pytest.raises(ScriptNotFoundError, match='does not exist'):
        find_script(str(tmp_path / 'nowhere' / 'train.py'))


def test_download_from_local_server_is_cached(tmp_path, monkeypatch):
    served = tmp_path / 'served' / scripts_ref()
    served.mkdir(parents=True)
    (served / 'validate.py').write_text('print("downloaded")\n')
    (served / 'benchmark.py').write_text('<html>not python</html>\n')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / 'served'))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv('TIMM_SCRIPTS_URL', f'http://127.0.0.1:{server.server_address[1]}/')
        monkeypatch.delenv('TIMM_SCRIPTS_OFFLINE')
        path = find_script('validate.py')
        assert path == (scripts_cache_dir() / 'validate.py').resolve()
        assert path.read_text() == 'print("downloaded")\n'
        with pytest.raises(ScriptNotFoundError, match='(?s)HTTP 404.*TIMM_SCRIPTS_DIR'):
            find_script('train.py')
        with pytest.raises(ScriptNotFoundError, match='did not serve a Python script'):
            find_script('benchmark.py')
        assert not (scripts_cache_dir() / 'benchmark.py').exists()
    finally:
        server.shutdown()
        server.server_close()
    # the server is gone: the cached copy is used
    assert find_script('validate.py').read_text() == 'print("downloaded")\n'


def test_download_from_file_url(tmp_path, monkeypatch):
    (tmp_path / 'mirror' / scripts_ref()).mkdir(parents=True)
    (tmp_path / 'mirror' / scripts_ref() / 'inference.py').write_text('x = 1\n')
    monkeypatch.setenv('TIMM_SCRIPTS_URL', (tmp_path / 'mirror').as_uri())
    with pytest.raises(ScriptNotFoundError, match='TIMM_SCRIPTS_OFFLINE=1'):
        find_script('inference.py')
    monkeypatch.delenv('TIMM_SCRIPTS_OFFLINE')
    assert find_script('inference.py').read_text() == 'x = 1\n'
    with pytest.raises(ScriptNotFoundError, match='Could not download onnx_export.py'):
        find_script('onnx_export.py')


@pytest.mark.slow
def test_launcher_in_timm_checkout(tmp_path):
    """Script and working directory in a timm checkout whose timm/ imports fine: the installed timm still runs the
    script, with our models registered and the script's own argv."""
    checkout = tmp_path / 'pytorch-image-models'
    (checkout / 'timm').mkdir(parents=True)
    # a working timm of its own (it runs the installed package's code, so it imports fast) that marks itself
    (checkout / 'timm' / '__init__.py').write_text(
        f'CHECKOUT_MARKER = True\n__path__ = [{str(Path(INSTALLED_TIMM).parent)!r}]\n'
        f'exec(compile(open({INSTALLED_TIMM!r}).read(), {INSTALLED_TIMM!r}, "exec"))\n')
    (checkout / 'probe.py').write_text(PROBE_SCRIPT)
    res = _run_launcher(['probe.py', '--num-classes', '3', '--flag'], cwd=checkout,
                        env_extra={'TIMM_SCRIPTS_DIR': str(checkout)})
    assert res.returncode == 0, res.stderr
    (probe,) = _probe_results(res.stdout)
    assert probe['timm'] == INSTALLED_TIMM and not probe['marker']
    assert probe['argv'] == ['--num-classes', '3', '--flag'] and probe['shape'] == [1, 3] and probe['registered']
    assert 'shadows the installed timm' in res.stderr
    assert f'timm {timm.__version__} from {Path(INSTALLED_TIMM).parent}' in res.stderr


@pytest.mark.slow
def test_launcher_under_torchrun(tmp_path):
    (tmp_path / 'probe.py').write_text(PROBE_SCRIPT)
    res = _run_launcher(
        ['--nproc_per_node=2', '--standalone', '-m', 'timm_mrap.training.launch', str(tmp_path / 'probe.py'),
         '--num-classes', '4'], cwd=tmp_path, module=('-m', 'torch.distributed.run'))
    assert res.returncode == 0, res.stderr
    probes = _probe_results(res.stdout)
    assert sorted(p['rank'] for p in probes) == ['0', '1']
    assert all(p['registered'] and p['shape'] == [1, 4] and p['timm'] == INSTALLED_TIMM for p in probes)


def test_launcher_find_and_usage(tmp_path, capsys, monkeypatch):
    from timm_mrap.training.launch import main
    (tmp_path / 'train.py').write_text('pass\n')
    monkeypatch.setenv('TIMM_SCRIPTS_DIR', str(tmp_path))
    main(['--find', 'train.py'])
    assert capsys.readouterr().out.strip() == str((tmp_path / 'train.py').resolve())
    for argv, message in ((['--model', 'x', 'train.py'], 'unrecognized arguments: --model'), ([], 'SCRIPT')):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit, match='has no missing.py'):
        main(['missing.py', '--epochs', '1'])
