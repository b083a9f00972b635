"""Counters, gauges and histograms rendered in the Prometheus text format (no MACs or codes as labels).

Small on purpose: the hot path does one dict lookup and one integer add per event.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence


def _fmt_labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


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

    def samples(self) -> Iterable[str]:
        for key, v in sorted(self._values.items()):
            yield f"{self.name}{_fmt_labels(self.labelnames, key)} {_num(v)}"


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

    def samples(self) -> Iterable[str]:
        if self._fns:
            values: dict[tuple[str, ...], float] = {}
            for fn in self._fns:
                for key, v in fn().items():
                    values[key] = values.get(key, 0) + v
            self._values = values
        return super().samples()


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

    def samples(self) -> Iterable[str]:
        for key, s in sorted(self._series.items()):
            cumulative = 0.0
            for bound, n in zip((*self.buckets, math.inf), s[:-1], strict=True):
                cumulative += n
                le = f'le="{_num(bound)}"'
                yield f"{self.name}_bucket{_fmt_labels(self.labelnames, key, le)} {_num(cumulative)}"
            yield f"{self.name}_sum{_fmt_labels(self.labelnames, key)} {_num(s[-1])}"
            yield f"{self.name}_count{_fmt_labels(self.labelnames, key)} {_num(cumulative)}"


Metric = Counter | Gauge | Histogram


class Registry:
    """Holds every metric of one server instance; `render` is the /metrics body."""

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

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._metrics):
            m = self._metrics[name]
            lines.append(f"# HELP {name} {m.help}")
            lines.append(f"# TYPE {name} {m.kind}")
            lines.extend(m.samples())
        return "\n".join(lines) + "\n"
