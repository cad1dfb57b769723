"""Benchmarks of the trainers (see benchmarks/README.md)."""
