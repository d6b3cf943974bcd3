"""Where the real data lives (../shared/data, or $TORCHLITE_DATA) and how to read it."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return Path(os.environ.get("TORCHLITE_DATA", REPO_ROOT.parent / "shared" / "data"))


def wikitext2(split: str = "test") -> str | None:
    """WikiText-2 raw text of `split` ("test" or "valid"), or None when the file is absent."""
    if split not in ("test", "valid"):
        raise ValueError(f"wikitext-2 split must be 'test' or 'valid', not {split!r}")
    path = data_dir() / "wikitext-2" / f"{split}.txt"
    return path.read_text(encoding="utf-8") if path.exists() else None
