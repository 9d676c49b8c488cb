"""Benchmarks: one script per figure in docs/benchmarks.md (python -m bench.<name>)."""
