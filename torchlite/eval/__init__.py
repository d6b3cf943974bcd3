"""Measuring compressed models: data, models, perplexity, size and speed."""
