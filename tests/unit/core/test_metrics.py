"""The house metrics as a prometheus_client collector: names, types, labels and bucket bounds as
Imprint has always exposed them, read back with prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.core.metrics import Registry, scrape_registry


def test_families_keep_their_names_types_labels_and_bounds() -> None:
    reg = Registry()
    reg.counter("imprint_x_total", "Things, by kind", ("kind",)).inc("a", amount=2)
    reg.gauge("imprint_g", "A level", ("state",)).set_function(lambda: {("on",): 3.0})
    hist = reg.histogram("imprint_h_seconds", "Durations", buckets=(0.005, 1, 2.5))
    hist.observe(0.002)
    hist.observe(3)
    text = reg.render()

    assert "# HELP imprint_x_total Things, by kind\n# TYPE imprint_x_total counter\n" in text
    assert "# TYPE imprint_g gauge\n" in text
    assert "# TYPE imprint_h_seconds histogram\n" in text
    assert "_created" not in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    (x,) = fams["imprint_x"].samples
    assert (x.name, x.labels, x.value) == ("imprint_x_total", {"kind": "a"}, 2)
    assert [(s.labels, s.value) for s in fams["imprint_g"].samples] == [({"state": "on"}, 3)]
    buckets = {
        s.labels["le"]: s.value
        for s in fams["imprint_h_seconds"].samples
        if s.name == "imprint_h_seconds_bucket"
    }
    # The bounds are written as before ("1", not "1.0"): the same series for existing queries.
    assert buckets == {"0.005": 1, "1": 1, "2.5": 1, "+Inf": 2}
    sums = {s.name: s.value for s in fams["imprint_h_seconds"].samples if "le" not in s.labels}
    assert sums == {"imprint_h_seconds_count": 2, "imprint_h_seconds_sum": 3.002}


def test_a_counter_not_named_total_is_refused_with_the_rule() -> None:
    with pytest.raises(ValueError, match=r"imprint_things must be named \.\.\._total"):
        Registry().counter("imprint_things", "Things")


def test_a_series_with_the_wrong_number_of_labels_fails_the_scrape_by_name() -> None:
    reg = Registry()
    reg.counter("imprint_x_total", "Things", ("kind", "result")).inc("only-one")
    with pytest.raises(ValueError, match=r"imprint_x_total has labels \('kind', 'result'\)"):
        reg.render()


def test_the_scrape_registry_adds_process_gc_and_platform_and_filters_by_name() -> None:
    reg = Registry()
    registry = scrape_registry(reg)
    reg.counter("imprint_late_total", "Registered after the scrape registry").inc()
    fams = {
        f.name: f.type for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert fams["imprint_late"] == "counter"
    assert fams["process_cpu_seconds"] == "counter"
    assert fams["python_gc_objects_collected"] == "counter"
    assert fams["python_info"] == "gauge"
    only = registry.restricted_registry(["imprint_late_total"])
    assert [f.name for f in only.collect()] == ["imprint_late"]
