"""Sinks: where committed batches go. The DuckDB store is the default sink; remote-write sinks
forward to Prometheus-compatible stores (table and fan-out: `legion.aggregator.sinks.table`).

This package's `__init__` imports nothing, so the glue (legion/cli/config.py) imports the section's
dataclasses (`legion.aggregator.sinks.config`) without an import cycle.
"""
