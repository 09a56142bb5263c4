"""Benchmarks and load runs (not part of the test suite): each prints a table and writes JSON."""
