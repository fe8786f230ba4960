"""The aggregator: Curve-authenticated ingest into DuckDB (`ingest.py`, `store/`), the gateway's
API, stream and dashboard (`gateway/`), the analytics bridge, alerting (`alerts/`) and sinks
(`sinks/`), wired together by `service.py`."""
