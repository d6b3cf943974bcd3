"""Quantization numerics: plain tensor functions, testable without FX."""
from .linear import QuantizedWeight, dequantize_weight, quantize_weight
from .log import LogQuantizedWeight, dequantize_log, quantize_log
from .vector import VectorQuantizedWeight, dequantize_vector, quantize_vector

__all__ = [
    "LogQuantizedWeight", "QuantizedWeight", "VectorQuantizedWeight", "dequantize_log", "dequantize_vector",
    "dequantize_weight", "quantize_log", "quantize_vector", "quantize_weight",
]
