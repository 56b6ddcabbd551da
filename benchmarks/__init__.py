"""Benchmarks: `python -m benchmarks.bench_<op>`; the shared harness is benchmarks/common.py."""
