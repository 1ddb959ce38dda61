"""Prometheus metrics: the daemon owns one registry and passes it down (no global registry).

The engine's metrics are defined here, the same for every family; a family's own metrics come
from its adapter's ``samples()``, read at scrape time by one :class:`FamilyCollector` per registry
(so two pipelines of one family export one metric family, labelled by pipeline).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger("eddy")
disable_created_metrics()  # no <name>_created series: they double every counter's series count

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FamilyCollector:
    """The families' metrics of every pipeline on one registry, read at scrape time.

    Each pipeline (an engine: ``name``, ``lock``, ``samples()``) is read under its lock, waited
    for at most ``wait_s``; a pipeline busy longer exports the samples of its last read.
    """

    def __init__(self, wait_s: float = 0.5):
        self.engines: list[Any] = []
        self.wait_s = wait_s
        self._last: dict[int, list] = {}
        self._guard = threading.Lock()

    def add(self, engine: Any) -> None:
        with self._guard:
            self.engines.append(engine)

    def _read(self, engine: Any) -> list:
        lock: threading.RLock = engine.lock
        if lock.acquire(timeout=self.wait_s):
            try:
                self._last[id(engine)] = list(engine.samples())
            except Exception:  # a family's failing metric must not take /metrics down
                log.warning("%s: reading the family's metrics failed", engine.name, exc_info=True)
            finally:
                lock.release()
        return self._last.get(id(engine), [])

    def collect(self) -> Iterator[Metric]:
        with self._guard:
            engines = list(self.engines)
        fams: dict[str, Metric] = {}
        names: dict[str, list[str]] = defaultdict(list)
        for e in engines:
            for s in self._read(e):
                fam = fams.get(s.name)
                if fam is None:
                    names[s.name] = ["pipeline", *s.labels]
                    cls = {"counter": CounterMetricFamily, "histogram": HistogramMetricFamily}.get(
                        s.kind, GaugeMetricFamily)
                    fam = fams[s.name] = cls(s.name, s.doc, labels=names[s.name])
                if set(s.labels) != set(names[s.name][1:]):  # one label set per metric name
                    log.warning("%s: metric %s with labels %s (expected %s): skipped", e.name, s.name,
                                sorted(s.labels), names[s.name][1:])
                    continue
                labels = [e.name, *(str(s.labels[k]) for k in names[s.name][1:])]
                if s.kind == "histogram":  # value: ([(upper bound, cumulative count), ...], sum)
                    buckets, total = s.value
                    fam.add_metric(labels, buckets=buckets, sum_value=total)  # type: ignore[union-attr]
                else:
                    fam.add_metric(labels, float(s.value))  # type: ignore[union-attr]
        yield from fams.values()


class DaemonMetrics:
    """Every metric of the engine and the runtime, labelled by pipeline (and bounded labels only);
    the process's and the platform's collectors; the families' collector (:attr:`families`)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.families = FamilyCollector()
        r.register(self.families)
        P = ["pipeline"]
        self.build = Info("eddy_build", "eddy version", registry=r)
        self.events = Counter("eddy_events_total", "Input records consumed, by kind", P + ["kind"], registry=r)
        self.decisions = Counter("eddy_decisions_total", "Outputs published (decisions, predictions, cache answers)", P + ["source"], registry=r)
        self.defaults = Counter("eddy_default_decisions_total",
                                "Decisions that fell back to the default action, by reason", P + ["reason"], registry=r)
        self.errors = Counter("eddy_errors_total", "Rejected records and requests, by reason", P + ["reason"], registry=r)
        self.dead_letters = Counter("eddy_dead_letter_messages_total", "Records published to the dead-letter topic",
                                    P + ["reason"], registry=r)
        self.replays = Counter("eddy_replayed_decisions_total",
                               "Decisions published again after a restart (marked replay)", P, registry=r)
        self.resent = Counter("eddy_resent_decisions_total",
                              "Decisions sent again after a delivery that may have reached the broker (a timeout, a "
                              "lost connection, an acknowledgement without an offset), marked replay", P, registry=r)
        self.batch_latency = Histogram("eddy_batch_duration_seconds",
                                       "Wall time to process one micro-batch (decode, decide, learn)",
                                       P, buckets=BATCH_BUCKETS, registry=r)
        self.decision_latency = Histogram("eddy_decision_latency_seconds",
                                          "Sidecar handling time of event requests (/decide, /predict, /access)", P, buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Counter("eddy_stage_seconds_total",
                                     "Wall time of the pipeline by stage: the loop's poll, process, publish, checkpoint "
                                     "(flush: the part of publish spent waiting for the broker's acknowledgements); "
                                     "within process, the engine's decode, features (hashing, crosses), kernel (learner calls) "
                                     "and encode",
                                     P + ["stage"], registry=r)
        self.lag = Gauge("eddy_consumer_lag_messages", "Consumer lag per partition", P + ["topic", "partition"],
                         registry=r)
        self.checkpoint_age = Gauge("eddy_checkpoint_age_seconds", "Seconds since the last checkpoint", P, registry=r)
        self.checkpoints = Counter("eddy_checkpoints_total", "Checkpoints written", P, registry=r)
        self.offset_resets = Counter("eddy_offset_resets_total", "Partitions whose resume position lay beyond "
                                     "the log's end (log lost or topic recreated), moved by the reset policy",
                                     P + ["topic", "partition"], registry=r)
        self.join_size = Gauge("eddy_join_buffer_entries", "Events waiting for their feedback (reward, label)", P, registry=r)
        self.join_cap = Gauge("eddy_join_buffer_capacity_entries", "Cap of the join buffer", P, registry=r)
        self.dedup_size = Gauge("eddy_dedup_entries", "Remembered event ids", P, registry=r)
        self.cap_evictions = Counter("eddy_cap_evictions_total", "Entries pushed out by a configured cap",
                                     P + ["cap"], registry=r)
        self.force_default = Gauge("eddy_force_default", "1 while the default policy is forced", P, registry=r)
        self.ready = Gauge("eddy_ready", "1 once kernels are compiled, state restored, the consumer group joined "
                           "and every assigned partition restored; 0 again while the pipeline's loop is "
                           "stalled (no step ended for 30 s: a lost broker)", P, registry=r)
        self.assigned_partitions = Gauge("eddy_assigned_partitions", "Input partitions this daemon's pipeline "
                                         "owns in its consumer group", P + ["topic"], registry=r)
        self.topic_lag = Gauge("eddy_topic_lag_messages", "Records of the input topic (every partition, owned or "
                               "not) past the group's committed offsets", P + ["topic"], registry=r)
        self.checkpoint_damaged = Counter("eddy_checkpoint_damaged_total", "Checkpoints found damaged at start-up "
                                          "(skipped for an older intact one)", P, registry=r)
        self.partition_restore = Gauge("eddy_partition_restore_seconds", "Seconds the last restore of an "
                                       "assigned partition's state from the changelog took", P + ["partition"],
                                       registry=r)
        self.changelog_lag = Gauge("eddy_changelog_lag_messages", "Input records of an owned partition "
                                   "processed since its state was last written to the changelog",
                                   P + ["partition"], registry=r)
        self.changelog_bytes = Counter("eddy_changelog_bytes_total", "State bytes written to the changelog", P,
                                       registry=r)
        self.broker_reconnects = Counter("eddy_kafka_client_rebuilds_total",
                                         "Kafka clients rebuilt after a fatal error or broker loss",
                                         P + ["client"], registry=r)
