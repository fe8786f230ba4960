"""When the ingest writer commits a group: at its deadline, or once the inbox is quiet after an
interval without commits (a lone batch is stored at once; commits stay one per interval)."""

from __future__ import annotations

import pytest

from legion.aggregator.commit_groups import QUIET_SECS, group_wait


def test_an_empty_group_waits_until_its_deadline() -> None:
    assert group_wait(10.0, 10.1, False, 0.0) == pytest.approx(0.1)
    assert group_wait(10.0, 10.1, False, 99.0) == pytest.approx(0.1)


def test_a_group_after_a_quiet_interval_is_committed_once_nothing_more_arrives() -> None:
    # the last commit was long ago: wait only QUIET_SECS for more frames
    assert group_wait(10.0, 10.1, True, 5.0) == pytest.approx(QUIET_SECS)
    assert QUIET_SECS < 0.1


def test_commits_stay_at_most_one_per_interval() -> None:
    # committed 0.04 s ago with a 0.1 s interval: the group waits until 0.06 s from now (+ quiet)
    assert group_wait(10.0, 10.1, True, 10.06) == pytest.approx(0.06 + QUIET_SECS)
    # never past the group's own deadline
    assert group_wait(10.0, 10.1, True, 10.5) == pytest.approx(0.1)
    assert group_wait(10.2, 10.1, True, 5.0) <= 0
