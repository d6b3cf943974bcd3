"""The numerics of every compression, as plain tensor functions (no FX): quantization schemes
(linear, log, vector) and their calibrated variants (GPTQ, AWQ, SmoothQuant), N:M storage and pruning
importance, low-rank decompositions, and the activation statistics they read."""
from .linear import QuantizedWeight, dequantize_weight, quantize_weight
from .log import LogQuantizedWeight, dequantize_log, quantize_log
from .nm import NMWeight, nm_mask, pack_nm, unpack_nm
from .stats import InputStats
from .vector import VectorQuantizedWeight, dequantize_vector, quantize_vector

__all__ = [
    "InputStats", "LogQuantizedWeight", "NMWeight", "QuantizedWeight", "VectorQuantizedWeight", "dequantize_log",
    "dequantize_vector", "dequantize_weight", "nm_mask", "pack_nm", "quantize_log", "quantize_vector",
    "quantize_weight", "unpack_nm",
]
