"""Errors torchlite raises for bad input."""


class TorchliteError(ValueError):
    """Bad input to torchlite: the message names the problem and how to fix it."""
