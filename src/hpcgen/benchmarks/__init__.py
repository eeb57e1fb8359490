"""Benchmarks: every speed claim measured as a ratio against a baseline run in the same process."""
