"""Benchmarks of the studio against the raw libraries, on realistic-size random-weight checkpoints."""
