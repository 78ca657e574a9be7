"""Standalone benchmarks: `.venv/bin/python -m bench.<name>`."""
