"""Benchmarks behind `make bench` / `twinloop bench`."""
