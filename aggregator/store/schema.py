"""Fixed, versioned DDL of the one DuckDB file, and opening it.

Why this shape:

* ``series(id, node, name, labels_key, labels)``: a series is the canonical (node, name, sorted
  labels). Its identity is stored once, so a point costs a 4-byte ``series_id`` instead of three
  strings; ``labels_key`` (canonical JSON of the sorted pairs) makes the identity unique and
  hashable, ``labels`` (``MAP(VARCHAR, VARCHAR)``) keeps them filterable in SQL (``labels['cpu']``).
* ``points(series_id, ts, value)``: the newest raw points, one row each (fast to insert and to
  roll up); no index and no key (an ART index would cost more than the data). Each commit
  is inserted in bulk from numpy columns, sorted by (series_id, ts), so a row group holds
  long runs of one series with increasing ``ts``: RLE on ``series_id``, bit-packed deltas on
  ``ts``, ALP on ``value``, and zone maps (min/max per row group) prune range scans.
* ``late_points(series_id, ts, value)`` (v2): points that arrived for a window already packed
  (or being packed); packing moves them into chunks with the next window.
* ``chunks_<hour>(series_id, chunk_id, ts_from, t_min, t_max, n, data)`` (v2, one table per UTC
  hour, created by ``packing`` on demand): settled raw points, one row per series and hour holding a
  ``chunkcodec`` blob: about 1 byte per point where a row costs 5-7 whatever the order and types
  (measured). Per-hour tables because DuckDB frees space only by whole row groups or tables.
* ``batches(node, epoch, seq, points, received_ms)``: written in the same transaction as the
  points, so a batch is stored exactly once even across crashes; loaded as seq ranges at open.
* ``batch_runs(node, epoch, first_seq, last_seq, points, first_ms, last_ms)`` (v6,
  ``batch_fold.py``): `batches` rows past their horizon, folded by maintenance into one row per
  run of consecutive seqs; loaded with `batches` at open, so a resend is still a duplicate.
* ``nodes`` (v1-v4; dropped in v5): per-node bookkeeping, rewritten in each commit. Since v5 it
  is derived from ``batches`` (and ``dropped`` from the agent's own metric) when the file is
  opened: one statement less per commit.
* ``dirty_minutes``: minutes whose raw points changed since the last rollup pass, written in the
  same transaction as the points, so rollups are recomputed after a crash too.
* ``rollup_1m|1h|1d(series_id, bucket, min, max, sum, count, last_ts, last)``: the tiers. 1m is
  written per rolled minute, 1h and 1d once per settled hour and day (v2; before, partial rows
  on every pass, folded by a compaction whose deletes made checkpoints slow). A bucket may hold
  several partial rows (late points merged in); readers always combine rows per bucket.
* ``tier_state(tier, kept_since_ms)``: retention horizon per tier (and the archive's progress).
* ``rejected_batches(node, epoch, seq, rejected_ms)`` (v4, ``rejected.py``): seqs acked
  `rejected`, written before the ack, so `missing` stays exact across restarts.
* ``alert_*`` (v3, written by ``legion.aggregator.alerts.journal``): alert state per fingerprint,
  every transition (incident history), incidents, silences, every notification attempt and the
  notification log (what each receiver was last told), so a restart neither forgets nor
  re-notifies.

Changing any of this means a new ``SCHEMA_VERSION`` and a migration in ``MIGRATIONS``; a file
written by a newer version is refused rather than guessed at.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from legion.kernel.errors import StoreError

SCHEMA_VERSION = 6
TIERS: dict[str, int] = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
"""Rollup tiers, finest first: name -> bucket width in ms."""

_ROLLUP_DDL = """
CREATE TABLE rollup_{tier} (
    series_id INTEGER NOT NULL, bucket BIGINT NOT NULL,
    min DOUBLE NOT NULL, max DOUBLE NOT NULL, sum DOUBLE NOT NULL, count BIGINT NOT NULL,
    last_ts BIGINT NOT NULL, last DOUBLE NOT NULL
)"""

DDL_V1: tuple[str, ...] = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_ms BIGINT NOT NULL)",
    """CREATE TABLE series (
        id INTEGER PRIMARY KEY, node VARCHAR NOT NULL, name VARCHAR NOT NULL,
        labels_key VARCHAR NOT NULL, labels MAP(VARCHAR, VARCHAR) NOT NULL,
        created_ms BIGINT NOT NULL, UNIQUE (node, name, labels_key))""",
    "CREATE TABLE points (series_id INTEGER NOT NULL, ts BIGINT NOT NULL, value DOUBLE NOT NULL)",
    """CREATE TABLE batches (node VARCHAR NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
        points INTEGER NOT NULL, received_ms BIGINT NOT NULL)""",
    """CREATE TABLE nodes (node VARCHAR NOT NULL, first_seen_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL, points BIGINT NOT NULL, epoch BIGINT NOT NULL,
        last_seq BIGINT NOT NULL, dropped BIGINT NOT NULL)""",
    "CREATE TABLE dirty_minutes (minute BIGINT NOT NULL)",
    *(_ROLLUP_DDL.format(tier=t) for t in TIERS),
    "CREATE TABLE tier_state (tier VARCHAR NOT NULL, kept_since_ms BIGINT NOT NULL)",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # v2: raw points may also live in `late_points` and packed in chunk tables `chunks_<hour>`
    # (created on demand, chunk_tables.CHUNK_DDL); a v1 build would not see them.
    # v2 also materialises 1h/1d once per settled hour/day instead of appending partial rows
    # on every pass: the buckets written so far count as materialised (rolling a minute in one
    # recomputes it from the tier below).
    1: ("CREATE TABLE late_points (series_id INTEGER NOT NULL, ts BIGINT NOT NULL, "
        "value DOUBLE NOT NULL)",
        "INSERT INTO tier_state SELECT 'hours_done', coalesce(max(bucket) + 3600000, 0) "
        "FROM rollup_1h",
        "INSERT INTO tier_state SELECT 'days_done', coalesce(max(bucket) + 86400000, 0) "
        "FROM rollup_1d"),
    # v3: alerting (aggregator/alerts/journal.py writes these).
    2: ("""CREATE TABLE alert_state (fingerprint VARCHAR NOT NULL, id VARCHAR NOT NULL,
            rule_id VARCHAR NOT NULL, state VARCHAR NOT NULL, doc VARCHAR NOT NULL,
            updated_ms BIGINT NOT NULL)""",
        """CREATE TABLE alert_events (ts_ms BIGINT NOT NULL, alert_id VARCHAR NOT NULL,
            rule_id VARCHAR NOT NULL, from_state VARCHAR NOT NULL, to_state VARCHAR NOT NULL,
            value DOUBLE, labels VARCHAR NOT NULL)""",
        """CREATE TABLE alert_incidents (id VARCHAR NOT NULL, group_key VARCHAR NOT NULL,
            receiver VARCHAR NOT NULL, opened_ms BIGINT NOT NULL, closed_ms BIGINT,
            alerts VARCHAR NOT NULL)""",
        """CREATE TABLE alert_silences (id VARCHAR NOT NULL, matchers VARCHAR NOT NULL,
            starts_ms BIGINT NOT NULL, ends_ms BIGINT NOT NULL, comment VARCHAR NOT NULL,
            created_by VARCHAR NOT NULL, expired_ms BIGINT)""",
        """CREATE TABLE alert_notifications (ts_ms BIGINT NOT NULL, receiver VARCHAR NOT NULL,
            group_key VARCHAR NOT NULL, kind VARCHAR NOT NULL, attempt INTEGER NOT NULL,
            outcome VARCHAR NOT NULL, error VARCHAR, alert_ids VARCHAR NOT NULL)""",
        """CREATE TABLE alert_nflog (group_key VARCHAR NOT NULL, receiver VARCHAR NOT NULL,
            digest VARCHAR NOT NULL, notified_ms BIGINT NOT NULL, resolved BOOLEAN NOT NULL)"""),
    # v4: seqs acked `rejected` (aggregator/store/rejected.py).
    3: ("""CREATE TABLE rejected_batches (node VARCHAR NOT NULL, epoch BIGINT NOT NULL,
            seq BIGINT NOT NULL, rejected_ms BIGINT NOT NULL)""",),
    # v5: per-node bookkeeping is derived from `batches` at open (writer._LOAD_NODES).
    4: ("DROP TABLE nodes",),
    # v6: old `batches` rows fold into runs of seqs (aggregator/store/batch_fold.py).
    5: ("""CREATE TABLE batch_runs (node VARCHAR NOT NULL, epoch BIGINT NOT NULL,
            first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, points BIGINT NOT NULL,
            first_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL)""",),
}
"""from_version -> statements that bring a file to from_version + 1. A new file is created at
version 1 and migrated, so every migration runs on every new file too."""


NEW_FILE_BLOCK_SIZE = 65_536
"""DuckDB block size of a file this build creates (DuckDB's default is 256 KiB, its smallest
16 KiB). Every table and index takes whole blocks, so a young or small install paid ~2 MiB for its
dozen small tables; measured in docs/peers.md ("File on disk"). A file keeps the block size it was
created with: older files open as they are."""

DB_ALIAS = "legion"
"""The file is attached under this name to an in-memory catalog (the same path with or without
encryption); every connection and cursor `USE`s it."""


def open_database(path: Path | str, key: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the database file, encrypted with `key` if given, at
    SCHEMA_VERSION."""
    con = duckdb.connect()
    new = not Path(path).exists() or Path(path).stat().st_size == 0
    options = [f"BLOCK_SIZE {NEW_FILE_BLOCK_SIZE}"] if new else []
    try:
        if key is not None:
            load_crypto(con)
            options.append(f"ENCRYPTION_KEY {_quote(key)}")
        con.execute(f"ATTACH {_quote(str(path))} AS {DB_ALIAS}"
                    + (f" ({', '.join(options)})" if options else ""))
        con.execute(f"USE {DB_ALIAS}")
    except duckdb.Error as exc:
        con.close()
        msg = str(exc)
        if "Wrong encryption key" in msg:
            raise StoreError(f"wrong encryption key for {path}") from exc
        if "without a key" in msg:
            raise StoreError(f"{path} is encrypted: set storage.encryption_enabled and its key"
                             ) from exc
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        ensure_schema(con, str(path))
    except BaseException:
        con.close()
        raise
    return con


def load_crypto(con: duckdb.DuckDBPyConnection) -> None:
    """Load the httpfs extension (OpenSSL), without which DuckDB cannot write encrypted files."""
    candidates: list[str] = []
    try:
        import duckdb_extension_httpfs  # type: ignore[import-not-found]

        root = Path(duckdb_extension_httpfs.__file__).parent / "extensions"
        candidates = [str(p) for p in sorted(root.glob("*/httpfs.duckdb_extension"))]
    except ImportError:
        pass
    for ext in candidates + ["httpfs"]:
        try:
            con.execute(f"LOAD {_quote(ext)}" if ext != "httpfs" else "LOAD httpfs")
            return
        except duckdb.Error:
            continue
    raise StoreError(
        f"storage.encryption_enabled needs DuckDB's httpfs extension (OpenSSL) and DuckDB "
        f"{duckdb.__version__} has none installed: install legion-monitor[encryption] "
        "(duckdb 1.5.5 + duckdb-extension-httpfs 1.5.5) or keep the database on an encrypted "
        "volume instead (docs/storage.md)")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ensure_schema(con: duckdb.DuckDBPyConnection, label: str) -> int:
    """Create the schema in an empty file, migrate an older one, refuse a newer one."""
    try:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_catalog = current_database()").fetchall()}
        if "schema_version" not in tables:
            if tables:
                raise StoreError(f"{label} is not a Legion Monitor database "
                                 f"(tables {sorted(tables)}, no schema_version)")
            _apply(con, DDL_V1, 1)
        row = con.execute("SELECT max(version) FROM schema_version").fetchall()[0]
        version = int(row[0] or 0)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{label} has schema version {version}, newer than this build's "
                             f"{SCHEMA_VERSION}; upgrade Legion Monitor to open it")
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise StoreError(f"{label}: no migration from schema version {version}")
            _apply(con, MIGRATIONS[version], version + 1)
            version += 1
        return version
    except duckdb.Error as exc:
        raise StoreError(f"{label}: schema check failed: {exc}") from exc


def _apply(con: duckdb.DuckDBPyConnection, statements: tuple[str, ...], version: int) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        for stmt in statements:
            con.execute(stmt)
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, int(time.time() * 1000)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
