"""Benchmarks for the agent task queue (not tests: run them with ``python -m benchmarks.pipeline``)."""
