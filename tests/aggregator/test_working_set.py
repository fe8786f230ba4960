"""working_set.py: which mappings are trimmed (a recorded smaps), and a real trim in a real
process that keeps using DuckDB afterwards."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from legion.aggregator.working_set import clean_file_mappings

SMAPS = Path(__file__).parent / "fixtures" / "smaps_duckdb.txt"
"""/proc/self/smaps of a process that ran one DuckDB query: `_duckdb`'s four mappings (r--p
clean, r-xp clean, r--p relocated = private, rw-p), then the heap and an anonymous mapping."""


def test_only_clean_read_only_file_mappings_are_chosen() -> None:
    chosen = clean_file_mappings(SMAPS.read_text())
    lines = [ln.split() for ln in SMAPS.read_text().splitlines()
             if not ln.split()[0].endswith(":")]
    perms = {int(ln[0].split("-")[0], 16): ln[1] for ln in lines}
    assert [perms[lo] for lo, _, _ in chosen] == ["r--p", "r-xp"]
    assert all(kib > 0 and hi > lo for lo, hi, kib in chosen)


def test_trim_drops_file_pages_and_duckdb_keeps_answering(tmp_path: Path) -> None:
    """In a real process: RssFile falls by most of what was dropped, and a DuckDB file opened
    before the trim is written and read right after it."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import re, duckdb
        from legion.aggregator.working_set import trim_code_pages
        def rss_file():
            s = open('/proc/self/status').read()
            return int(re.search(r'RssFile:\\s+(\\d+)', s).group(1))
        con = duckdb.connect({str(tmp_path / 'x.duckdb')!r})
        con.execute('CREATE TABLE t AS SELECT range AS i FROM range(1000)')
        before = rss_file()
        dropped = trim_code_pages()
        after = rss_file()
        con.execute('INSERT INTO t SELECT range FROM range(1000, 2000)')
        con.execute('CHECKPOINT')
        print(dropped > 10_000, before - after > dropped // 2, con.execute(
            'SELECT count(*), sum(i) FROM t').fetchall())""")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True [(2000, 1999000)]"
