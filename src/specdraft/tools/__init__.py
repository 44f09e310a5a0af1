"""Developer tools the Makefile runs (benchmarks); no pipeline stage imports them."""
