"""The benchmark runs end to end on a tiny configuration and writes what it promises (no timing assertions)."""
import csv
import json

import pytest
import torch

from timm_mrap.benchmark import CSV_COLUMNS, BenchmarkConfig, parse_variants, run_benchmark
from timm_mrap.benchmark.__main__ import main

TINY = ['--variants', 'mobilenetv2_mrap:none', 'mobilenetv2_mrap:mrap', '--img-size', '32', '--num-classes', '10',
        '--batch-sizes', '2', '--train-batch-sizes', '2', '--repeats', '2', '--warmup', '0', '--threads', '1',
        '--device', 'cpu']


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'out'
    assert main(TINY + ['--output', str(out)]) == 0
    return out


def test_cli_writes_csv_json_and_png(tiny_run):
    with open(tiny_run / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    # 2 variants x (inference b2 + training b2)
    assert [(r['variant'], r['mode']) for r in rows] == [
        ('mobilenetv2_mrap:none', 'infer'), ('mobilenetv2_mrap:mrap', 'infer'),
        ('mobilenetv2_mrap:none', 'train'), ('mobilenetv2_mrap:mrap', 'train')]
    for r in rows:
        assert r['error'] == '' and float(r['median_ms']) > 0 and float(r['throughput']) > 0
        assert float(r['min_ms']) <= float(r['q25_ms']) <= float(r['median_ms']) <= float(r['q75_ms'])
        assert float(r['q75_ms']) <= float(r['max_ms'])
        assert r['baseline'] == 'mobilenetv2_mrap:none' and r['repeats'] == '2'
    assert all(float(r['relative']) == 1. for r in rows if r['attn'] == 'none')
    mrap = next(r for r in rows if r['attn'] == 'mrap')
    none = next(r for r in rows if r['attn'] == 'none')
    assert float(mrap['params_m']) > float(none['params_m'])  # MRAP's perceptrons and spatial convs
    assert float(mrap['gmacs']) > float(none['gmacs']) > 0

    meta = json.loads((tiny_run / 'results.json').read_text())
    assert 'FlopCounterMode' in meta['environment']['mac_counter']
    assert meta['config']['img_size'] == 32 and len(meta['results']) == 4
    assert meta['command'].startswith('python -m timm_mrap.benchmark')
    assert (tiny_run / 'relative_cost.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_environment_names_the_cpu_and_its_speed_flags(tmp_path):
    """Ratios move with the CPU (int8 dot products, vector width): results record its name and flags."""
    from timm_mrap.benchmark.results import cpu_info, environment
    x86 = tmp_path / 'x86'
    x86.write_text('processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n'
                   'processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu\n')
    assert cpu_info(str(x86)) == ('AMD EPYC 9R14', {'fpu', 'sse2', 'avx2', 'avx512f', 'avx512_vnni'})
    arm = tmp_path / 'arm'
    arm.write_text('processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n')
    assert cpu_info(str(arm))[1] == {'fp', 'asimd', 'asimddp', 'i8mm'}
    assert cpu_info(str(tmp_path / 'missing'))[1] == set()
    env = environment()
    assert env['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    assert set(env['cpu_flags'].split()) <= set(cpu_info()[1])


def test_cli_keeps_existing_results_without_overwrite(tiny_run, capsys):
    before = (tiny_run / 'results.csv').read_text()
    assert main(TINY + ['--output', str(tiny_run)]) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert (tiny_run / 'results.csv').read_text() == before


FAILING = ['--variants', 'mobilenetv3_small_mrap:none', 'mobilenetv3_small_mrap:mrap:triton', '--img-size', '32',
           '--num-classes', '10', '--settings', 'fp32:eager:infer:1', '--repeats', '1', '--threads', '1',
           '--device', 'cpu', '--no-plot']


def test_a_failing_variant_fails_the_run(tmp_path, capsys, monkeypatch):
    """MRAP's Triton kernels need CUDA (or TRITON_INTERPRET): on CPU that variant fails, and so does the command."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    assert main(FAILING + ['--output', str(tmp_path / 'stop')]) == 1
    err = capsys.readouterr().err
    assert 'mobilenetv3_small_mrap:mrap:triton' in err and '--keep-going' in err
    assert not (tmp_path / 'stop').exists()


def test_keep_going_measures_the_rest_and_still_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    assert main(FAILING + ['--keep-going', '--output', str(tmp_path)]) == 1
    assert 'mobilenetv3_small_mrap:mrap:triton' in capsys.readouterr().err
    with open(tmp_path / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['variant'] for r in rows] == ['mobilenetv3_small_mrap:none', 'mobilenetv3_small_mrap:mrap:triton']
    assert rows[0]['error'] == '' and float(rows[0]['median_ms']) > 0
    assert 'RuntimeError' in rows[1]['error'] and rows[1]['median_ms'] == 'nan'


def test_library_rows_and_timm_models():
    cfg = BenchmarkConfig(
        variants=['mobilenetv1_100', 'mobilenetv2_mrap:cbam'], baseline='mobilenetv2_mrap:cbam', modes=['infer'],
        infer_batch_sizes=[1], img_size=32, num_classes=10, warmup=0, repeats=1, threads=1)
    rows = run_benchmark(cfg, log=None)
    assert [r['variant'] for r in rows] == ['mobilenetv1_100', 'mobilenetv2_mrap:cbam']
    assert rows[1]['relative'] == 1. and rows[0]['attn'] == '' and rows[0]['repeats'] == 1
    assert rows[0]['q25_ms'] == rows[0]['median_ms'] == rows[0]['max_ms']  # one repeat: no spread


def test_every_attention_choice_is_a_variant_and_params_plot(tmp_path):
    from timm_mrap.layers import ATTN_CHOICES
    variants = parse_variants([f'mobilenetv2_mrap:{a}' for a in ATTN_CHOICES])
    assert [(v.model, v.attn) for v in variants] == [('mobilenetv2_mrap', a) for a in ATTN_CHOICES]
    argv = ['--variants', 'mobilenetv2_mrap:none', 'mobilenetv2_mrap:simam', 'mobilenetv2_mrap:coord', '--img-size',
            '32', '--num-classes', '10', '--settings', 'fp32:eager:infer:1', '--repeats', '1', '--warmup', '0',
            '--threads', '1', '--device', 'cpu', '--plot', 'params', '--output', str(tmp_path)]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cost_vs_params.png', 'results.csv', 'results.json']
    assert (tmp_path / 'cost_vs_params.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('specs, message', [
    (['mobilenetv2_mrap:foo'], 'attn'),
    (['not_a_model'], 'model'),
    (['mobilenetv2_100', 'mobilenetv2_100'], 'repeat'),
])
def test_bad_variants_are_clear_errors(specs, message):
    with pytest.raises(ValueError, match=message):
        parse_variants(specs)


def test_bad_baseline_and_device_are_clear_errors():
    with pytest.raises(ValueError, match='[Bb]aseline'):
        run_benchmark(BenchmarkConfig(variants=['mobilenetv2_100'], baseline='mobilenetv1_100'), log=None)
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA'):
            BenchmarkConfig(devices=['cuda']).validate()


def test_explicit_settings_onnxruntime_and_impl_variants():
    """One run measures eager and onnxruntime side by side, and MRAP implementations as variants."""
    cfg = BenchmarkConfig(
        variants=['mobilenetv3_small_mrap:none', 'mobilenetv3_small_mrap:mrap:reference',
                  'mobilenetv3_small_mrap:mrap:fused'],
        settings=['fp32:eager:infer:2', 'fp32:onnxruntime:infer:2', 'fp16:eager:infer:2'], img_size=64,
        num_classes=10, warmup=0, repeats=1, threads=1)
    rows = run_benchmark(cfg, log=None)
    # fp16 autocast is a CUDA setting: skipped on CPU
    assert [(r['runtime'], r['mrap_impl']) for r in rows] == [
        ('eager', ''), ('eager', 'reference'), ('eager', 'fused'),
        ('onnxruntime', ''), ('onnxruntime', 'reference'), ('onnxruntime', 'fused')]
    assert all(r['error'] == '' and r['median_ms'] > 0 for r in rows)


@pytest.mark.slow  # two ExecuTorch lowerings of a small network, about a minute
def test_executorch_rows_fp32_and_int8():
    """ExecuTorch fp32 and int8 programs are measured side by side with eager PyTorch; int8 is ExecuTorch only.
    ``threads`` sizes ExecuTorch's thread pool during the run, which is restored after it."""
    pytest.importorskip('executorch', reason='the mobile extra is not installed')
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count
    cfg = BenchmarkConfig(
        variants=['mobilenetv3_small_mrap:none', 'mobilenetv3_small_mrap:mrap'],
        settings=['fp32:eager:infer:1', 'fp32:executorch:infer:1', 'int8:executorch:infer:1', 'int8:eager:infer:1'],
        img_size=64, num_classes=10, warmup=0, repeats=2, threads=1)
    before, during = _threadpool_get_thread_count(), set()
    rows = run_benchmark(cfg, log=lambda msg: during.add(_threadpool_get_thread_count()))
    assert during == {1} and _threadpool_get_thread_count() == before
    assert [(r['precision'], r['runtime'], r['attn']) for r in rows] == [
        ('fp32', 'eager', 'none'), ('fp32', 'eager', 'mrap'), ('fp32', 'executorch', 'none'),
        ('fp32', 'executorch', 'mrap'), ('int8', 'executorch', 'none'), ('int8', 'executorch', 'mrap')]
    assert all(r['error'] == '' and r['median_ms'] > 0 for r in rows)
    assert [r['relative'] for r in rows if r['attn'] == 'none'] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize('spec', ['fp32:eager:infer', 'fp64:eager:infer:1', 'fp32:jit:infer:1', 'fp32:eager:infer:0'])
def test_bad_settings_are_clear_errors(spec):
    with pytest.raises(ValueError, match='precision:runtime:mode:batch'):
        BenchmarkConfig(settings=[spec]).validate()


def test_impl_only_with_mrap():
    with pytest.raises(ValueError, match='model:mrap:IMPL'):
        parse_variants(['mobilenetv2_mrap:cbam:fused'])
    with pytest.raises(ValueError, match='model:mrap:IMPL'):
        parse_variants(['mobilenetv2_mrap:mrap:cuda'])
