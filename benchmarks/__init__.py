"""Benchmarks: ``python -m benchmarks.run [--quick]`` prints a table and writes JSON."""
