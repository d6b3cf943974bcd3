"""Quantization numerics: plain tensor functions, testable without FX."""
from .linear import QuantizedWeight, dequantize_weight, quantize_weight

__all__ = ["QuantizedWeight", "dequantize_weight", "quantize_weight"]
