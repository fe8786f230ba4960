"""`legionctl`, the one command: `main.py` holds the click group, one `*_cmds.py` module per verb
family, and `client.py` the API client every query verb goes through (never the DuckDB file)."""
