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
    """In a real process: the first look trims nothing, the second drops what stood since;
    RssFile falls by most of it, and a DuckDB file opened before is written, checkpointed and
    read right after."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import re, duckdb
        from legion.aggregator.working_set import CodePageTrimmer
        def rss_file():
            s = open('/proc/self/status').read()
            return int(re.search(r'RssFile:\\s+(\\d+)', s).group(1))
        con = duckdb.connect({str(tmp_path / 'x.duckdb')!r})
        con.execute('CREATE TABLE t AS SELECT range AS i FROM range(1000)')
        trimmer = CodePageTrimmer()
        first = trimmer.trim()  # a first look only records what is mapped
        before = rss_file()
        dropped = trimmer.trim()
        after = rss_file()
        con.execute('INSERT INTO t SELECT range FROM range(1000, 2000)')
        con.execute('CHECKPOINT')
        print(first, dropped > 10_000, before - after > dropped // 2, con.execute(
            'SELECT count(*), sum(i) FROM t').fetchall())""")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0 True True [(2000, 1999000)]"


def test_a_library_mapped_since_the_last_look_is_left_alone() -> None:
    """A real process loads a library between two looks: the second look drops the older
    mappings but not that library's pages; the third drops them too."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import re
        from pathlib import Path
        from legion.aggregator.working_set import CodePageTrimmer
        def resident(name):
            kib, on = 0, False
            for line in Path('/proc/self/smaps').read_text().splitlines():
                head = line.split()
                if not head[0].endswith(':') and '-' in head[0]:
                    on = name in line
                elif on and head[0] == 'Rss:':
                    kib += int(head[1])
            return kib
        t = CodePageTrimmer()
        t.trim()
        import duckdb
        duckdb.connect().execute('SELECT 42').fetchall()
        kept = resident('_duckdb')
        second = t.trim()
        print(second > 0, resident('_duckdb') >= kept)
        third = t.trim()
        print(third > 10_000, resident('_duckdb') < kept // 2)""")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["True True", "True True"]
