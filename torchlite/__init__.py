"""torchlite."""
