"""FX helpers shared by the passes: copying graphs, finding linear-like ops, reading weights."""
from .linear import LinearSite, find_linears
from .attrs import attr_name, clone, get_attr_value, set_attr

__all__ = ["LinearSite", "attr_name", "clone", "find_linears", "get_attr_value", "set_attr"]
