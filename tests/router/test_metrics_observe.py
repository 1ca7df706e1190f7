"""`metrics._observe` and `metrics._inc` (the request path's metric updates) against prometheus_client's own."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from router.metrics import LATENCY_BUCKETS, PROBABILITY_BUCKETS, _inc, _observe

VALUES = [0.0, -1.0, 1e-9, 0.5, 1.0, 0.999999, 2.5, 1e9, math.inf, math.nan]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples
            if not s.name.endswith("_created")}


def test_same_samples_as_histogram_observe() -> None:
    for buckets in (LATENCY_BUCKETS, PROBABILITY_BUCKETS):
        # every bound itself, just below and above it, and the odd values
        values = VALUES + [b for bound in buckets for b in (bound, bound * (1 - 1e-12), bound * (1 + 1e-12))]
        ours, theirs = CollectorRegistry(), CollectorRegistry()
        h_ours = Histogram("h", "h", ["route"], buckets=buckets, registry=ours)
        h_theirs = Histogram("h", "h", ["route"], buckets=buckets, registry=theirs)
        for v in values:
            _observe(h_ours.labels("r"), v)
            h_theirs.labels("r").observe(v)
        got, want = _samples(ours), _samples(theirs)
        assert got.keys() == want.keys()
        for key, value in want.items():  # the sum is NaN (a NaN was observed): compare as such
            assert (math.isnan(value) and math.isnan(got[key])) or got[key] == value, key
        counts = [v for (name, _), v in got.items() if name == "h_count"]
        assert counts == [len(values) - 1]  # NaN lands in no bucket, as prometheus_client does it


def test_inc_same_samples_as_counter_inc() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    c_ours = Counter("c", "c", ["route"], registry=ours)
    c_theirs = Counter("c", "c", ["route"], registry=theirs)
    for amount in (1.0, 0.0, 2.5, 1e-12, 7):
        _inc(c_ours.labels("r"), amount)
        c_theirs.labels("r").inc(amount)
    assert _samples(ours) == _samples(theirs)
    with pytest.raises(ValueError):
        _inc(c_ours.labels("r"), -1.0)
