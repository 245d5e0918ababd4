"""Benchmarks that print their figures; run them as modules from the repo root (`python -m bench.<name>`)."""
