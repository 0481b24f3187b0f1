"""Benchmarks of skene-pg (`make bench`, or `python -m bench.run`); see docs/benchmarks.md."""
