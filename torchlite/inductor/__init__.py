"""Inductor lowerings of torchlite's custom ops. Importing this package registers them."""
from . import quant  # noqa: F401  (registers the lowerings)
