"""The decoder's shortcuts change nothing it decides: remembered names and label sets, and the
Python range checks of small batches, reject exactly what the full checks reject."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from legion.proto import Reason, WireError, codec, decode
from legion.proto import limits as L

NOW = 1_795_845_600_000


def frame(n: int, names: list[object] | None = None, labels: list[object] | None = None,
          name_idx: list[int] | None = None, label_idx: list[int] | None = None,
          values: list[float] | None = None, ts: list[int] | None = None) -> bytes:
    """A metrics frame of `n` points (m_a, no labels, 1.0, NOW unless given)."""
    body = {"names": names if names is not None else ["m_a"],
            "labels": labels if labels is not None else [{}],
            "name_idx": np.array(name_idx or [0] * n, "<u4").tobytes(),
            "label_idx": np.array(label_idx or [0] * n, "<u4").tobytes(),
            "values": np.array(values or [1.0] * n, "<f8").tobytes(),
            "ts": np.array(ts or [NOW] * n, "<i8").tobytes()}
    return msgpack.packb({"v": 1, "kind": "metrics", "node": "n1", "epoch": 1, "seq": 1,
                          "ts": NOW, "body": body}, use_bin_type=True)


def last(n: int, value: object, default: object) -> list[object]:
    """`n` items, all `default` but the last."""
    return [default] * (n - 1) + [value]


SIZES = [1, codec.SMALL_BATCH, codec.SMALL_BATCH + 1, 200]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", ["name_idx", "label_idx", "nan", "inf", "past", "future"])
def test_range_checks_on_both_sides_of_small_batch(n: int, case: str) -> None:
    decode(frame(n), now_ms=NOW)  # the good frame of that size passes
    bad = {"name_idx": dict(name_idx=last(n, 1, 0)),
           "label_idx": dict(label_idx=last(n, 1, 0)),
           "nan": dict(values=last(n, float("nan"), 1.0)),
           "inf": dict(values=last(n, float("-inf"), 1.0)),
           "past": dict(ts=last(n, NOW - L.MAX_PAST_MS - 1, NOW)),
           "future": dict(ts=last(n, NOW + L.MAX_FUTURE_MS + 1, NOW))}[case]
    want = {"name_idx": Reason.INDEX_OUT_OF_RANGE, "label_idx": Reason.INDEX_OUT_OF_RANGE,
            "nan": Reason.NON_FINITE_VALUE, "inf": Reason.NON_FINITE_VALUE,
            "past": Reason.TIMESTAMP_OUT_OF_RANGE, "future": Reason.TIMESTAMP_OUT_OF_RANGE}[case]
    with pytest.raises(WireError) as info:
        decode(frame(n, **bad), now_ms=NOW)  # type: ignore[arg-type]
    assert info.value.reason is want


def test_edges_of_the_time_window_pass_in_both_paths() -> None:
    for n in SIZES:
        edges = last(n, NOW - L.MAX_PAST_MS, NOW + L.MAX_FUTURE_MS)
        env = decode(frame(n, ts=edges), now_ms=NOW)  # type: ignore[arg-type]
        assert int(env.body.ts_ms.min()) == NOW - L.MAX_PAST_MS


def test_remembered_label_sets_let_nothing_bad_through() -> None:
    good = {"mount": "/", "device": "sda"}
    env = decode(frame(1, labels=[good]), now_ms=NOW)
    assert env.body.label_sets == ((("device", "sda"), ("mount", "/")),)
    # the same keys and values in another order: one canonical (sorted) set
    again = decode(frame(1, labels=[{"device": "sda", "mount": "/"}]), now_ms=NOW)
    assert again.body.label_sets == env.body.label_sets
    for bad, reason in [({"mount": "/", "device": 1}, Reason.MISTYPED_FIELD),
                        ({"mount": "/", "device": ["sda"]}, Reason.MISTYPED_FIELD),
                        ({"mount": "/", "1device": "sda"}, Reason.BAD_LABEL),
                        ({"mount": "/", "device": "s" * (L.MAX_LABEL_VALUE_LEN + 1)},
                         Reason.LABEL_TOO_LONG),
                        ("mount=/", Reason.MISTYPED_FIELD)]:
        with pytest.raises(WireError) as info:
            decode(frame(1, labels=[bad]), now_ms=NOW)
        assert info.value.reason is reason, bad
    decode(frame(1, labels=[good]), now_ms=NOW)  # still remembered as good


def test_remembered_names_let_nothing_bad_through() -> None:
    decode(frame(2, names=["m_a", "m_b"], name_idx=[0, 1]), now_ms=NOW)
    for bad, reason in [(["m_a", "m-b"], Reason.BAD_NAME), (["m_a", 7], Reason.MISTYPED_FIELD),
                        (["m_a", ["m_b"]], Reason.MISTYPED_FIELD),
                        (["m_a", "m" * (L.MAX_NAME_LEN + 1)], Reason.NAME_TOO_LONG)]:
        with pytest.raises(WireError) as info:
            decode(frame(2, names=bad, name_idx=[0, 1]), now_ms=NOW)
        assert info.value.reason is reason, bad


def test_what_is_remembered_is_bounded() -> None:
    for i in range(codec.VALIDATED_KEPT + 50):
        decode(frame(1, names=[f"m_{i}"], labels=[{"i": str(i)}]), now_ms=NOW)
    assert 0 < len(codec._labels_seen) <= codec.VALIDATED_KEPT
    assert 0 < len(codec._names_seen) <= codec.VALIDATED_KEPT
