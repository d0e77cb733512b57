"""Benchmarks and the synthetic image kinds they use."""
