"""specdraft: Chain-of-Draft speculative decoding, as a reproducible DVC pipeline."""

__version__ = "0.1.0"
