"""Hand-written C++ kernels as Inductor IR nodes.

A `CppKernelCall` is an `ExternKernelOut` whose code generation defines its source the way Inductor
defines its own C++ kernels (`async_compile.cpp_pybinding`): Inductor compiles it with its toolchain,
caches it, and the compiled graph calls it directly (no dispatcher, no Python op in between). The
source gets `#define`s for everything static (shapes, layout, tables), so each layer shape compiles
to its own specialisation. Sources live in `csrc/`.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch._inductor import ir

from . import tiers

CSRC = Path(__file__).parent / "csrc"


@functools.cache
def source(name: str) -> str:
    return (CSRC / name).read_text()


def kernel_source(name: str, *headers: str) -> str:
    """The source of the kernel csrc/`name`: csrc/simd.h (the SIMD layer of every tier), `headers`, `name`."""
    return "".join(source(h) for h in ("simd.h", *headers, name))


def static_int(size) -> bool:
    return isinstance(size, int) or getattr(size, "is_Integer", False)


def takes_decode_call(x2, m_rows) -> tiers.Tier | None:
    """The tier a hand-written kernel takes this call on (None: it cannot): a selected tier
    (`tiers.selected`), float32 activations on the CPU and a row count known at compile time (it
    becomes a #define)."""
    tier = tiers.selected()
    if tier and x2.get_device().type == "cpu" and x2.get_dtype() == torch.float32 and static_int(m_rows):
        return tier
    return None


class CppKernelCall(ir.ExternKernelOut):
    """out = kernel(*inputs) for a C++ `extern "C" void kernel(...)` taking the inputs' and the output's
    data pointers, in that order (`arg_types`: their C types)."""

    def __init__(self, inputs, layout: ir.Layout, src: str, defines: dict, arg_types: list[str], name: str):
        super().__init__(layout, [self.require_contiguous(self.realize_input(t)) for t in inputs])
        self.source = "".join(f"#define {k} {v}\n" for k, v in defines.items()) + src
        self.arg_types, self.kernel_prefix = arg_types, name

    def codegen(self, wrapper) -> None:
        name = wrapper.src_to_kernel.get(self.source)
        if name is None:
            name = f"cpp_torchlite_{self.kernel_prefix}_{wrapper.next_kernel_suffix()}"
            wrapper.src_to_kernel[self.source] = name
            wrapper.define_kernel(
                name, f"async_compile.cpp_pybinding({self.arg_types!r}, r'''\n{self.source}''')", gpu=False
            )
        args = [t.codegen_reference() for t in self.inputs]
        wrapper.writeline(f"{name}({', '.join([*args, self.get_name()])})")


def call(inputs, shape, src: str, defines: dict, arg_types: list[str], name: str):
    """A float32 [shape] tensor computed by the kernel, compiled for the selected tier (its #defines
    first), as a TensorBox for further lowering."""
    defines = tiers.selected().defines() | defines
    device = inputs[0].get_device()
    layout = ir.FixedLayout(device, torch.float32, list(shape), ir.FlexibleLayout.contiguous_strides(list(shape)))
    return ir.TensorBox.create(CppKernelCall(inputs, layout, src, defines, arg_types, name))
