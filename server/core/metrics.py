"""Counters, gauges and histograms counted in-process and exposed through prometheus_client
(no MACs or codes as labels).

The hot path stays ours on purpose: `inc` is one dict lookup and one add, with no lock and no
label child (prometheus_client's own `Counter.labels(...).inc()` costs several times as much,
and DHCP and mDNS count every packet). At scrape time `Registry.collect` turns each metric into
a prometheus_client metric family, so the library writes the exposition (text 0.0.4 or
OpenMetrics) and `scrape_registry` adds its process_*, python_gc_* and python_info families.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as MetricFamily
from prometheus_client.registry import CollectorRegistry


def _le(bound: float) -> str:
    """A bucket's `le` label as Imprint has always written it ("0.005", "1", "+Inf")."""
    if bound == math.inf:
        return "+Inf"
    if float(bound).is_integer():
        return str(int(bound))
    return repr(float(bound))


def _check_key(name: str, labelnames: tuple[str, ...], key: tuple[str, ...]) -> None:
    # `inc` does not check (hot path); a wrong count is a bug that must fail the scrape loudly
    # rather than lose a label silently.
    if len(key) != len(labelnames):
        raise ValueError(
            f"metric {name} has labels {labelnames} but a series was counted with values {key}"
        )


class Counter:
    """A monotonically increasing count, optionally split by label values."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labelvalues: str, amount: float = 1) -> None:
        """Add `amount` to the series named by `labelvalues` (positional, in labelnames order)."""
        self._values[labelvalues] = self._values.get(labelvalues, 0) + amount

    def value(self, *labelvalues: str) -> float:
        return self._values.get(labelvalues, 0)

    def total(self) -> float:
        return sum(self._values.values())

    def _series(self) -> list[tuple[tuple[str, ...], float]]:
        return sorted(self._values.items())

    def family(self) -> MetricFamily:
        """This metric's samples now, as a prometheus_client family (no `_created` sample)."""
        fam = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, v in self._series():
            _check_key(self.name, self.labelnames, key)
            fam.add_metric(key, v)
        return fam


class Gauge(Counter):
    """A value that goes up and down; `set_function` makes it computed at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._fns: list[Callable[[], dict[tuple[str, ...], float]]] = []

    def set(self, value: float, *labelvalues: str) -> None:
        self._values[labelvalues] = value

    def set_function(self, fn: Callable[[], dict[tuple[str, ...], float]]) -> None:
        self._fns = [fn]

    def add_function(self, fn: Callable[[], dict[tuple[str, ...], float]]) -> None:
        """Add `fn`'s values to the gauge's at scrape time (several sources of one family,
        e.g. one DHCP service per link, are summed)."""
        self._fns.append(fn)

    def remove_function(self, fn: Callable[[], dict[tuple[str, ...], float]]) -> None:
        """Stop adding `fn`'s values (its source stopped); unknown functions are ignored."""
        if fn in self._fns:
            self._fns.remove(fn)

    def _series(self) -> list[tuple[tuple[str, ...], float]]:
        if self._fns:
            values: dict[tuple[str, ...], float] = {}
            for fn in self._fns:
                for key, v in fn().items():
                    values[key] = values.get(key, 0) + v
            self._values = values
        return super()._series()

    def family(self) -> MetricFamily:
        fam = GaugeMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, v in self._series():
            _check_key(self.name, self.labelnames, key)
            fam.add_metric(key, v)
        return fam


class Histogram:
    """Observations bucketed by upper bound (seconds, bytes: base units)."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = ()
    ) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(sorted(buckets or (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)))
        self._les = tuple(_le(b) for b in (*self.buckets, math.inf))
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *labelvalues: str) -> None:
        s = self._series.get(labelvalues)
        if s is None:
            s = self._series[labelvalues] = [0.0] * (len(self.buckets) + 2)
        s[bisect.bisect_left(self.buckets, value)] += 1
        s[-1] += value

    def count(self, *labelvalues: str) -> float:
        s = self._series.get(labelvalues)
        return sum(s[:-1]) if s else 0

    def family(self) -> MetricFamily:
        fam = HistogramMetricFamily(self.name, self.help, labels=self.labelnames)
        for key, s in sorted(self._series.items()):
            _check_key(self.name, self.labelnames, key)
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self._les, s[:-1], strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            fam.add_metric(key, buckets, s[-1])
        return fam


Metric = Counter | Gauge | Histogram


class Registry:
    """Holds every metric of one server instance.

    A prometheus_client collector: `collect` yields one family per metric, by name. `render`
    is those families alone in the text format; /metrics serves `scrape_registry(...)`."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def _add(self, metric: Metric) -> Metric:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
                raise ValueError(f"metric {metric.name} registered twice with different shapes")
            return existing
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        if not name.endswith("_total"):
            # The exposition names a counter's samples NAME_total: any other name would change.
            raise ValueError(f"counter {name} must be named ..._total (Prometheus convention)")
        m = self._add(Counter(name, help, labelnames))
        assert isinstance(m, Counter)
        return m

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        m = self._add(Gauge(name, help, labelnames))
        assert isinstance(m, Gauge)
        return m

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = ()
    ) -> Histogram:
        m = self._add(Histogram(name, help, labelnames, buckets))
        assert isinstance(m, Histogram)
        return m

    def get(self, name: str) -> Metric | None:
        return self._metrics.get(name)

    def collect(self) -> Iterator[MetricFamily]:
        for name in sorted(self._metrics):
            yield self._metrics[name].family()

    def render(self) -> str:
        """These metrics alone in the Prometheus text format (0.0.4)."""
        return generate_latest(self).decode("utf-8")


def scrape_registry(metrics: Registry) -> CollectorRegistry:
    """What /metrics serves: `metrics`' imprint_* families, then prometheus_client's process_*
    (CPU, memory, file descriptors, start time), python_gc_* and python_info."""
    registry = CollectorRegistry(support_collectors_without_names=True)
    # No describe(): metrics are added while the server starts (the store's gauges, each DHCP
    # link), so the house collector is asked at every scrape, `?name[]=` filters included.
    registry.register(metrics)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
