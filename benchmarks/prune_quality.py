"""Pruning of SmolLM2-135M: unstructured, 2:4, MLP neurons and attention heads, with Torch-Pruning as
the structured peer, in one run.

Perplexity on WikiText-2 *test* (first --tokens tokens, 512-token windows); calibration (Wanda's
input norms) on WikiText-2 *valid* only. Speed: every model compiled (torch.compile, backend 'lite'
without a recipe: Inductor + torchlite lowerings, float linears included), then --rounds rounds visit
all models in turn (decode: batch-1 greedy with a static KV cache; prefill: one 512-token forward),
medians over rounds. Target (issue 4): structured
speedups at least 0.8x of the reduction, read as (speedup - 1) >= 0.8 * (ratio - 1), decode against
weight bytes and prefill against linear FLOPs.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings

import torch

import torchlite
from common import FRESH_COPY, compile_lite, header, markdown, measure_interleaved, write_section
from models import PROMPT, kv_heads, linear_macs, smollm2_and_wikitext
from torchlite import Prune, Recipe
from torchlite.eval.lm import perplexity, weight_bytes

warnings.filterwarnings("ignore")
STRUCTURED = (0.1, 0.2, 0.3)


def variants():
    yield "50 % unstructured, magnitude", Prune(sparsity=0.5)
    yield "50 % unstructured, Wanda", Prune(sparsity=0.5, importance="wanda")
    yield "2:4, magnitude", Prune(structure="n:m")
    yield "2:4, Wanda", Prune(structure="n:m", importance="wanda")
    for s in STRUCTURED:
        yield f"MLP neurons {s:.0%}, Wanda", Prune(structure="neuron", sparsity=s, importance="wanda")
    yield "MLP neurons 20%, L2", Prune(structure="neuron", sparsity=0.2, importance="l2")
    for s in STRUCTURED:
        yield f"heads (KV groups) {s:.0%}, Wanda", Prune(structure="head", sparsity=s, importance="wanda", scope="global")


def torch_pruning_variants(model, example):
    """The structured ratios with Torch-Pruning (L2 magnitude), or nothing when it is not installed:
    MLP neurons per layer through its MetaPruner, and whole KV groups ranked across layers through
    its dependency graph (its MetaPruner's GQA mode removes query heads only, never KV heads)."""
    try:
        import torch_pruning as tp
    except ImportError:
        print("torch-pruning not installed: no peer rows (pip install -e '.[bench]')", file=sys.stderr)
        return
    inputs = {"input_ids": example, "use_cache": False}
    for s in STRUCTURED:
        m = copy.deepcopy(model).requires_grad_(True)  # Torch-Pruning traces its dependency graph through autograd
        keep = [getattr(layer.mlp, n) for layer in m.model.layers for n in ("gate_proj", "up_proj")]
        ignored = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear) and mod not in keep]
        ignored += [m.model.embed_tokens]
        pruner = tp.pruner.MetaPruner(
            m, inputs, importance=tp.importance.GroupMagnitudeImportance(p=2), ignored_layers=ignored,
            output_transform=lambda out: out.logits.sum(), pruning_ratio=s,
        )
        pruner.step()
        yield f"Torch-Pruning: MLP neurons {s:.0%}", m.requires_grad_(False)
    for s in STRUCTURED:
        yield f"Torch-Pruning: heads (KV groups) {s:.0%}", _tp_kv_groups(tp, model, inputs, s)


def _tp_kv_groups(tp, model, inputs, ratio):
    """`ratio` of all KV groups (a KV head and its query heads) removed with Torch-Pruning: each group
    scored by GroupMagnitudeImportance(p=2) of its q_proj channels and their coupled layers (k/v follow
    through Torch-Pruning's GQA index mapping), ranked across layers, every layer keeping one group."""
    m = copy.deepcopy(model).requires_grad_(True)
    m.set_attn_implementation("eager")  # Torch-Pruning finds GQA from repeat_kv's expand, which sdpa skips
    graph = tp.DependencyGraph().build_dependency(m, example_inputs=inputs, output_transform=lambda out: out.logits.sum())
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    attn, scores = [layer.self_attn for layer in m.model.layers], []
    head_dim = m.config.head_dim
    for li, a in enumerate(attn):
        group = graph.get_pruning_group(a.q_proj, tp.prune_linear_out_channels, list(range(a.q_proj.out_features)))
        per_kv = importance(group).view(a.k_proj.out_features // head_dim, -1).mean(1)
        scores += [(float(v), li, j) for j, v in enumerate(per_kv)]
    drop: dict[int, list[int]] = {}
    for _, li, j in sorted(scores)[: round(ratio * len(scores))]:
        drop.setdefault(li, []).append(j)
    for li, groups in drop.items():  # one pruning call per layer: Torch-Pruning re-derives the mapping after each
        a = attn[li]
        kv = a.k_proj.out_features // head_dim
        width = a.q_proj.out_features // kv
        idxs = [c for j in sorted(groups)[: kv - 1] for c in range(j * width, (j + 1) * width)]
        graph.get_pruning_group(a.q_proj, tp.prune_linear_out_channels, idxs).prune()
        for proj in (a.k_proj, a.v_proj):  # the weights are right; out_features counted k/v's repeated indices
            proj.out_features = proj.weight.shape[0]
        assert a.q_proj.weight.shape[0] == a.o_proj.weight.shape[1] == a.k_proj.out_features * width // head_dim
    m.set_attn_implementation("sdpa")
    return m.requires_grad_(False)


def nonzero_linear_params(model) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.weight is not model.get_input_embeddings().weight:
            total += int((m.weight != 0).sum())
        elif isinstance(m, torchlite.SparseLinear):
            total += int((m.values != 0).sum())
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096, help="WikiText-2 test tokens for perplexity")
    parser.add_argument("--calib", type=int, default=16, help="calibration sequences of 512 tokens (WikiText-2 valid)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    loaded = smollm2_and_wikitext(args.tokens, args.calib)
    if loaded is None:
        return 1
    model, tok, test_ids, calib = loaded
    torch._dynamo.config.recompile_limit = 64  # several models share one forward code object
    torch._dynamo.config.automatic_dynamic_shapes = False  # each model gets its own static-shape graph
    torch._dynamo.config.accumulated_recompile_limit = 1024
    torch.manual_seed(0)
    batches = [{"input_ids": ids, "use_cache": False} for ids in calib]
    models, quality = {"fp32": copy.deepcopy(model)}, {}  # see common.FRESH_COPY
    for label, cfg in variants():
        start = time.perf_counter()
        models[label] = torchlite.compress(model, Recipe(prune=cfg), calib=batches)
        quality[label] = time.perf_counter() - start
        print(label, f"{quality[label]:.0f} s", flush=True)
    for label, m in torch_pruning_variants(model, calib[0][:, :64]):
        models[label] = m
    ppl = {name: perplexity(m, test_ids, desc=name) for name, m in models.items()}
    prompt = tok(PROMPT).input_ids
    prefill_ids = test_ids[:512].unsqueeze(0)
    compiled = {name: (compile_lite(m), m.config, kv_heads(m)) for name, m in models.items()}
    t = measure_interleaved(compiled, prompt, args.new_tokens, args.rounds, prefill_ids)
    base_bytes, base_macs = weight_bytes(model), linear_macs(model)
    rows = []
    for name, m in models.items():
        nbytes, nonzero = weight_bytes(m), nonzero_linear_params(m)
        dec, pre = t.decode_speedup(name, "fp32"), t.prefill_speedup(name, "fp32")
        structured = "neuron" in name or "head" in name
        bytes_ratio, flops_ratio = base_bytes / nbytes, base_macs / linear_macs(m)
        met = "-"
        if structured:
            met = "yes" if dec - 1 >= 0.8 * (bytes_ratio - 1) and pre - 1 >= 0.8 * (flops_ratio - 1) else "no"
        rows.append([
            name, f"{nonzero / 1e6:.1f}", f"{nbytes / 1e6:.0f}", f"{bytes_ratio:.3f}x", f"{ppl[name]:.2f}",
            f"{(ppl[name] / ppl['fp32'] - 1) * 100:+.1f}", f"{t.decode_tps(name):.1f} ({dec:.2f}x)",
            f"{t.prefill_tps(name, 512):.0f} ({pre:.2f}x)", f"{flops_ratio:.3f}x", f"{quality[name]:.0f}" if name in quality else "-", met,
        ])
        print(rows[-1], flush=True)
    body = [header("Pruning: unstructured, 2:4, neurons and heads, with Torch-Pruning (SmolLM2-135M)"), (
        f"SmolLM2-135M-Instruct, WikiText-2 test perplexity over the first {test_ids.numel() // 512 * 512} tokens "
        f"(512-token windows); Wanda's input norms from {args.calib} x 512 tokens of WikiText-2 valid. Params: nonzero "
        "weights of the linear layers (the lm_head is tied to the embedding and left dense); weight MB: the whole model "
        "as stored (unstructured zeros are stored dense; 2:4 layers hold fp32 values plus 1 byte of positions per group "
        "of 4). Neurons: per layer; heads: whole KV groups (3 query heads each, 3 groups per layer) ranked across "
        "layers (scope='global'); Wanda importance (consumer column norm × input norm), and one L2 (weight magnitude) "
        "row, the importance Torch-Pruning uses. Torch-Pruning 1.6.1 prunes the same MLP modules at the same ratios "
        "(GroupMagnitudeImportance p=2) for MLP neurons, and removes whole KV groups at the same ratios through its "
        "dependency graph (groups scored by the L2 magnitude of their q_proj channels and coupled layers, ranked across "
        "layers; its MetaPruner GQA mode removes query heads only). Speed under torch.compile (backend 'lite', no "
        f"recipe), {args.rounds} rounds of `common.measure_interleaved`: {args.new_tokens} batch-1 greedy decode tokens "
        "(static KV cache) with the models taking turns of 8 positions (the first of a turn untimed), then one "
        "512-token prefill each; speedups against fp32 are medians of paired ratios (decode: per position; prefill: "
        "per round), tok/s from the median step and prefill. Target met: "
        "structured rows only, (decode speedup − 1) ≥ 0.8 × (bytes ratio − 1) and (prefill speedup − 1) ≥ "
        "0.8 × (linear FLOPs ratio − 1), linear FLOPs including the lm_head.\n"
    ), FRESH_COPY + "\n", markdown(["model", "nonzero linear params (M)", "weight MB", "bytes ratio", "perplexity", "Δ %", "decode tok/s",
                 "prefill tok/s", "FLOPs ratio", "prune s", "target met"], rows)]
    write_section("prune_quality", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
