"""A labelled gauge kept as one plain dict and turned into series at scrape time (adapter
detail of ``health.metrics`` and ``health.opsmetrics``).

prometheus_client's labelled children are objects with a lock and a value holder each,
about 1 KB apiece; at 1,000 services x 5 instances the per-server and per-backend gauges
(certificate days, names missing, servers up) are 11,000 of them. A custom collector (the
library's documented way to export data kept elsewhere) holds a dict instead and builds the
family when Prometheus asks, which is rare next to how often the values are replaced.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily


class GaugeTable:
    """``name{labels...} value`` for every row of ``values``; ``replace`` swaps them all."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self._values: Mapping[tuple[str, ...], float] = {}
        registry.register(self)

    def replace(self, values: Mapping[tuple[str, ...], float]) -> None:
        """New rows (label values in ``labels`` order -> value); one assignment, so a scrape
        in another thread sees the old rows or the new ones, never a mix."""
        self._values = dict(values)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labels)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for key, value in self._values.items():
            family.add_metric(list(key), value)
        yield family
