"""specdraft: Chain-of-Draft speculative decoding, as a reproducible DVC pipeline."""
