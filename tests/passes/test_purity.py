"""Every pass is pure (on conftest's tiny Llama graph): it returns a new GraphModule and leaves its input graph, attributes and tensors as they were."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchlite
from torchlite import Factor, Prune, Quantize
from torchlite.passes.route import fuse_shared_inputs, route_decode_attention, route_float_linears


def snapshot(gm):
    """Everything a pass could change in place: the code, each node's target and arguments, and every tensor."""
    nodes = [(n.name, n.op, str(n.target), str(n.args), str(n.kwargs)) for n in gm.graph.nodes]
    tensors = {k: v.clone() for k, v in {**dict(gm.named_parameters()), **dict(gm.named_buffers())}.items()}
    return gm.code, nodes, tensors


def assert_unchanged(gm, before):
    code, nodes, tensors = snapshot(gm)
    assert code == before[0] and nodes == before[1]
    assert tensors.keys() == before[2].keys()
    for k, v in tensors.items():
        assert torch.equal(v, before[2][k]), k


PASSES = {
    "quantize int8": lambda gm, ids: torchlite.passes.quantize(gm, Quantize(bits=8)),
    "quantize int4 g32 asym": lambda gm, ids: torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32, symmetric=False)),
    "quantize log": lambda gm, ids: torchlite.passes.quantize(gm, Quantize(scheme="log", bits=4)),
    "quantize vector": lambda gm, ids: torchlite.passes.quantize(gm, Quantize(scheme="vector", codebook_size=16)),
    "quantize w8a8 static": lambda gm, ids: torchlite.passes.quantize(
        gm, Quantize(bits=8, activations="static"), calib=[ids]),
    "quantize gptq": lambda gm, ids: torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32, method="gptq"), calib=[ids]),
    "prune unstructured": lambda gm, ids: torchlite.passes.prune(gm, Prune(sparsity=0.5)),
    "prune 2:4": lambda gm, ids: torchlite.passes.prune(gm, Prune(structure="n:m")),
    "prune neuron": lambda gm, ids: torchlite.passes.prune(gm, Prune(structure="neuron", sparsity=0.5), calib=[ids]),
    "prune head wanda": lambda gm, ids: torchlite.passes.prune(
        gm, Prune(structure="head", sparsity=0.5, importance="wanda"), calib=[ids]),
    "factor": lambda gm, ids: torchlite.passes.factor(gm, Factor(ratio=0.5, min_saving=0.0)),
    "factor whiten": lambda gm, ids: torchlite.passes.factor(gm, Factor(ratio=0.5, method="whiten", min_saving=0.0), calib=[ids]),
    "route float linears": lambda gm, ids: route_float_linears(gm),
    "route decode attention": lambda gm, ids: route_decode_attention(gm),
    "fuse shared inputs": lambda gm, ids: fuse_shared_inputs(gm),
    "fuse shared inputs (int4 g32 codes)": lambda gm, ids: fuse_shared_inputs(
        torchlite.passes.quantize(gm, Quantize(bits=4, group_size=32, symmetric=False))[0]),
}


@pytest.mark.parametrize("name", sorted(PASSES))
def test_pass_leaves_its_input_unchanged(llama_graph, name):
    _, gm, ids = llama_graph
    before, logits = snapshot(gm), gm(ids)
    new, _ = PASSES[name](gm, ids)
    assert new is not gm
    assert_unchanged(gm, before)
    assert torch.equal(gm(ids), logits)


def test_pack_nm_leaves_its_input_unchanged(llama_graph):
    _, gm, ids = llama_graph
    sparse, report = torchlite.passes.prune(gm, Prune(structure="n:m"), pack=False)
    before, logits = snapshot(sparse), sparse(ids)
    packed, _ = torchlite.passes.pack_nm(sparse, {lay.name for lay in report.layers}, 2, 4)
    assert torch.ops.torchlite.nm_linear.default in [n.target for n in packed.graph.nodes]
    assert_unchanged(sparse, before)
    assert torch.equal(sparse(ids), logits)


@settings(max_examples=10, deadline=None)
@given(bits=st.sampled_from([2, 4, 8]), group=st.sampled_from([None, 32]), symmetric=st.booleans(),
       sparsity=st.floats(0.1, 0.9))
def test_quantize_and_prune_are_pure_for_any_config(llama_graph, bits, group, symmetric, sparsity):
    _, gm, ids = llama_graph
    before = snapshot(gm)
    torchlite.passes.quantize(gm, Quantize(bits=bits, group_size=group, symmetric=symmetric))
    torchlite.passes.prune(gm, Prune(sparsity=sparsity))
    assert_unchanged(gm, before)
