"""The floating-point linear (`torchlite::linear`): its lowering against F.linear, and the rewrite
that routes a graph's float linears to it."""
import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch._inductor.utils import run_and_get_code

import torchlite  # noqa: F401  (registers ops and lowerings)
from torchlite import TorchliteError
from torchlite.passes.route import route_float_linears

CASES = [
    # x batch shape, out, in, bias, dtype
    ((1,), 48, 64, True, torch.float32),
    ((1, 1), 100, 576, False, torch.float32),
    ((7,), 33, 128, True, torch.bfloat16),
    ((2, 8), 64, 96, False, torch.float16),  # 16 rows: still the decode reduction
    ((17,), 40, 64, True, torch.float32),  # past the decode rows: Inductor's GEMM
    ((3, 40), 24, 80, False, torch.bfloat16),
    ((1,), 24, 40, True, torch.float32),  # in_features not a whole number of vectors: loop with a tail
    ((3,), 200, 37, False, torch.bfloat16),
    ((1,), 24, 150, True, torch.float32),  # 128 in the unrolled loop, a tail of 22 in a plain one
    ((4,), 8, 70, False, torch.bfloat16),
]


@pytest.mark.parametrize("batch, n, k, with_bias, dtype", CASES)
def test_compiled_matches_eager(batch, n, k, with_bias, dtype):
    w, b = torch.randn(n, k).to(dtype), torch.randn(n).to(dtype) if with_bias else None
    x = torch.randn(*batch, k).to(dtype)

    def f(x):
        return torch.ops.torchlite.linear(x, w, b)

    out, ref = torch.compile(f, fullgraph=True)(x), F.linear(x.float(), w.float(), None if b is None else b.float())
    assert out.shape == (*batch, n) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("k", [512, 100])
def test_decode_shape_is_one_reduction_without_gemm(k):
    w, x = torch.randn(256, k), torch.randn(1, k)
    _, (code,) = run_and_get_code(torch.compile(lambda x: torch.ops.torchlite.linear(x, w, None)), x)
    call = code.split("def call")[1]
    assert "extern_kernels" not in call and "torch.ops.torchlite" not in call, "lowered: no GEMM, no fallback"
    assert "Vectorized<float>::loadu" in code


def test_prefill_shape_uses_gemm():
    w, x = torch.randn(256, 512), torch.randn(64, 512)
    _, (code,) = run_and_get_code(torch.compile(lambda x: torch.ops.torchlite.linear(x, w, None)), x)
    assert "extern_kernels" in code.split("def call")[1]


def test_op_passes_opcheck_and_gradients():
    x, w, b = (torch.randn(*shape, dtype=torch.double) for shape in [(3, 32), (8, 32), (8,)])
    torch.library.opcheck(torch.ops.torchlite.linear.default, (x, w, b))
    args = [t.requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(lambda *a: torch.ops.torchlite.linear(*a), args)


@pytest.mark.parametrize(
    "x, w, b, match",
    [
        (torch.randn(2, 16), torch.randn(4, 32), None, "x \\(2, 16\\) and weight \\(4, 32\\)"),
        (torch.randn(2, 16), torch.randn(4, 16), torch.randn(5), "bias has shape \\(5,\\), expected \\(4,\\)"),
        (torch.ones(2, 16, dtype=torch.int32), torch.randn(4, 16), None, "floating point"),
    ],
)
def test_bad_input_is_a_clear_error(x, w, b, match):
    with pytest.raises(TorchliteError, match=match):
        torch.ops.torchlite.linear(x, w, b)


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(64, 48)
        self.b = torch.nn.Linear(48, 40, bias=False)  # in_features 48: three vectors
        self.c = torch.nn.Linear(40, 8)  # in_features 40: a vector loop with a tail

    def forward(self, x):
        return self.c(F.relu(self.b(self.a(x))))


def test_route_rewrites_float_linears_and_keeps_the_input_graph():
    model, x = MLP().eval(), torch.randn(2, 64)
    gm = torchlite.trace(model, (x,))
    before = gm.code
    routed, report = route_float_linears(gm)
    targets = [n.target for n in routed.graph.nodes if n.op == "call_function"]
    assert len(report.layers) == 3 and targets.count(torch.ops.torchlite.linear.default) == 3
    assert gm.code == before, "the input graph is left as it was"
    torch.testing.assert_close(routed(x), model(x))


def test_route_leaves_non_float_weights():
    graph = fx.Graph()
    x = graph.placeholder("x")
    w = graph.placeholder("w")
    graph.output(graph.call_function(F.linear, (x, w)))
    gm = fx.GraphModule(torch.nn.Module(), graph)
    w.meta["val"] = torch.empty(8, 16, dtype=torch.int8)
    assert route_float_linears(gm)[1].layers == []


def test_decode_pair_has_no_copy_loop_between_its_reductions():
    """y = B (A x) at batch 1 (a low-rank pair): two reduction loops and nothing else. The sums of
    the first are handed to the second as a view, not copied by an epilogue loop of their own."""
    a, b = torch.randn(38, 576), torch.randn(1536, 38)

    def f(x):
        return torch.ops.torchlite.linear(torch.ops.torchlite.linear(x, a, None), b, None)

    x = torch.randn(1, 576)
    out, (code,) = run_and_get_code(torch.compile(f, fullgraph=True), x)
    torch.testing.assert_close(out, x @ a.T @ b.T, rtol=1e-4, atol=1e-3)
    assert code.count("#pragma omp for") == 2 and "omp single" not in code


@pytest.mark.parametrize("n, streams", [(256, 4), (72, 4), (34, 2), (66, 2), (33, 1), (48, 2)])
def test_decode_rows_are_read_as_parallel_streams_in_one_loop(n, streams):
    """A decode reduction over N rows is ROW_STREAMS (or 2) reductions over equal runs of rows, fused
    into one loop of N / streams iterations, each reading one row of every run; runs shorter than a
    vector's 16 rows, or N that does not split evenly, keep a single run."""
    w, x = torch.randn(n, 1024), torch.randn(1, 1024)
    out, (code,) = run_and_get_code(torch.compile(lambda x: torch.ops.torchlite.linear(x, w, None)), x)
    torch.testing.assert_close(out, x @ w.T, rtol=1e-5, atol=1e-3)
    assert code.count("#pragma omp for") == 1
    assert f"x0<static_cast<int64_t>({n // streams}L)" in code
    assert code.count("tmp_acc") and all(f"tmp_acc{i} " in code for i in range(streams))
