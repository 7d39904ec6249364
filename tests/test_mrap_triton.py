"""MRAP's Triton kernels against its reference ops, forward and backward, on shapes that take several channel chunks
and position blocks (bf16 / fp16 against float64: ``test_mrap_paths.py``).

Without a GPU the kernels run on CPU tensors through Triton's interpreter (``TRITON_INTERPRET=1``, set by
``conftest.py`` before Triton is imported); the interpreter is slow, so the shapes are small. On a CUDA machine the
same tests run the compiled kernels on the GPU.
"""
import pytest
import torch

triton = pytest.importorskip('triton', reason='Triton ships with the CUDA builds of PyTorch; this build has none')

from timm_mrap.layers.mrap_triton import TritonKernels, triton_available  # noqa: E402
from test_mrap_ops import assert_matches_reference, make_pair, post_activation  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
if not triton_available():
    pytest.skip('Triton needs a CUDA device or TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU)',
                allow_module_level=True)

CASES = [
    # channels, H, W, pool_types, rate
    (16, 6, 6, ('avg', 'std'), None),
    (33, 9, 7, ('avg', 'std'), None),  # odd channels and sizes: unequal top-n lists, partial tiles
    (20, 5, 5, ('avg', 'std', 'max'), (0.3, 0.5, 0.2)),  # three pools
    (24, 1, 1, ('avg', 'std'), None),  # 1 x 1 map
    (70, 9, 9, ('avg', 'std'), None),  # several channel chunks and position blocks
]


@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('channels, h, w, pool_types, rate', CASES)
def test_triton_matches_reference_float32(channels, h, w, pool_types, rate, channels_last, train):
    assert_matches_reference('triton', channels, h, w, pool_types, rate, train, channels_last, device=DEVICE)


def test_triton_float16_eval_matches_reference():
    fast, ref = (m.to(DEVICE) for m in make_pair('triton', 33, train=False))
    x = post_activation(2, 33, 5, 7, dtype=torch.float16).to(DEVICE)
    with torch.no_grad():
        out_t, out_r = fast(x), ref(x)
    assert out_t.dtype == torch.float16
    torch.testing.assert_close(out_t.float(), out_r.float(), atol=2e-3, rtol=2e-3)  # one fp16 rounding each


def test_statistics_kernel_is_exact_for_constant_rows_and_large_means():
    x = torch.rand(2, 40, 9, 9) * 3 + 100  # a large mean: one-pass formulas would lose the std
    x[:, :5] = 6.  # saturated channels
    x[:, :, 2, 3] = 6.  # a position constant over channels
    x = x.to(DEVICE)
    mean_c, std_c, mean_s, std_s = TritonKernels.statistics(x)
    ref_std_c, ref_mean_c = torch.std_mean(x.double(), (2, 3))
    ref_std_s, ref_mean_s = torch.std_mean(x.double(), 1, keepdim=True)
    for got, ref in [(mean_c, ref_mean_c), (std_c, ref_std_c), (mean_s, ref_mean_s), (std_s, ref_std_s)]:
        torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=2e-6)
    assert (std_c[:, :5] == 0).all() and (std_s[:, :, 2, 3] == 0).all()
