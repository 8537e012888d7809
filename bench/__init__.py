"""Benchmarks of Provisor (run by hand, not tests): see bench/README.md."""
