"""Sparsity numerics as plain tensor functions (N:M masks and the compressed N:M storage)."""
from .nm import NMWeight, nm_mask, pack_nm, unpack_nm

__all__ = ["NMWeight", "nm_mask", "pack_nm", "unpack_nm"]
