"""Benchmarks: seconds and peak memory, each as a ratio against a reference measured in the same run.

Run all with `make bench` (python -m bench) or one with `python -m bench.bench_NAME`.
Each writes a JSON of its figures to bench/results/ (not committed).
"""
