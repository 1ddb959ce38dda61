"""The daemon process: pipelines on Kafka, the sidecar, metrics, signals, the embedded broker."""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from typing import Any

from connectors import kafka as kafka_conn
from connectors.embedded import EmbeddedBroker

from . import __version__
from .config import Config
from .families import Core, make_core
from .metrics import DaemonMetrics
from .runner import PipelineRunner
from .sidecar import Sidecar, serve_in_thread

log = logging.getLogger("eddy")


class Daemon:
    def __init__(self, cfg: Config, broker: EmbeddedBroker | None = None):
        self.cfg = cfg
        self.metrics = DaemonMetrics()
        self.metrics.build.info({"version": __version__})
        self.broker = broker
        self.owns_broker = False
        self.cores: dict[str, Core] = {}
        self.runners: list[PipelineRunner] = []
        self.threads: list[threading.Thread] = []
        self.server = None
        self.server_threads: list[threading.Thread] = []
        self.http_port: int | None = None
        self.sidecar: Sidecar | None = None
        self.stopping = threading.Event()

    @property
    def kafka_settings(self) -> dict[str, Any]:
        k = dict(self.cfg.kafka)
        if k["bootstrap_servers"] == "embedded":
            assert self.broker is not None
            k["bootstrap_servers"] = self.broker.bootstrap
        return k

    def start(self) -> Daemon:
        """Starts the broker (when embedded), the sidecar and the pipelines; a start that fails part
        way stops whatever it had started (no broker, client or server outlives it) and raises."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _clients(self, pc: dict[str, Any]):
        """A pipeline's source (in the pipeline's own consumer group) and sink; the source tells the
        pipeline's runner of assignments and revocations (a keyed pipeline's changelog)."""
        settings = {**self.kafka_settings, "group_id": pc["group_id"]}
        name, client = pc["name"], settings["client"]

        def rebuilt() -> None:
            self.metrics.broker_reconnects.labels(pipeline=name, client=client).inc()

        def runner() -> PipelineRunner | None:
            return next((r for r in self.runners if r.core.name == name), None)

        def assigned(keys: list[str]) -> None:
            r = runner()
            if r is not None:
                r.on_assigned(keys)

        def revoked(keys: list[str]) -> None:
            r = runner()
            if r is not None:
                r.on_revoked(keys)

        source = kafka_conn.make_source(settings, [pc["input_topic"]], assigned, revoked)
        if settings["exactly_once"]:
            from connectors.transactions import transactional_sink

            return source, transactional_sink(settings, self._transactional_id(pc), rebuilt)
        return source, kafka_conn.make_sink(settings, rebuilt)

    def _transactional_id(self, pc: dict[str, Any]) -> str:
        """Stable per daemon instance and pipeline: a restart fences its previous incarnation."""
        import socket

        return f"{self.cfg.kafka['transactional_id'] or socket.gethostname()}.{pc['name']}"

    def _committed(self, pc: dict[str, Any]):
        """The pipeline's group's committed offsets on its input topic (read at each restore)."""
        settings, group, topic = self.kafka_settings, pc["group_id"], pc["input_topic"]
        return lambda: kafka_conn.committed_offsets(settings, group, topic)

    def _check_exactly_once(self) -> None:
        from connectors.transactions import isolation_problem

        from .config import ConfigError

        problem = isolation_problem(self.kafka_settings)
        if problem is not None:
            raise ConfigError([f"kafka.exactly_once: refused: the broker at {self.kafka_settings['bootstrap_servers']}"
                               f" does not isolate transactions ({problem}; probe: a record written in an "
                               "aborted transaction, then one in a committed one, read back read_committed). "
                               "Use a Kafka >= 2.5 broker, or run at least once (exactly_once = false)"])
        log.info("exactly-once: the broker isolates transactions (probe passed)")

    def _start(self) -> Daemon:
        k = self.cfg.kafka
        if k["bootstrap_servers"] == "embedded" and self.broker is None:
            self.broker = EmbeddedBroker(k["broker_binary"]).start()
            self.owns_broker = True
            log.info("embedded broker (memory storage: data is lost when it stops) at %s", self.broker.bootstrap)
        if k["bootstrap_servers"] == "embedded":
            topics = []
            for p in self.cfg.pipelines:
                topics += [p["input_topic"], p["output_topic"], p["dead_letter_topic"]]
            kafka_conn.create_topics(self.kafka_settings, topics, k["topic_partitions"])
        if k["exactly_once"]:
            self._check_exactly_once()
        for p in self.cfg.pipelines:
            self.cores[p["name"]] = make_core(p, self.metrics)
        h = self.cfg.http
        if h["enabled"]:
            self.sidecar = Sidecar(self.cores, self.metrics, h["token"], h["max_body_bytes"])
            self.server, th, self.http_port = serve_in_thread(self.sidecar, h["host"], h["port"])
            self.server_threads.append(th)
            log.info("HTTP sidecar and /metrics on http://%s:%s", h["host"], self.http_port)
        for p in self.cfg.pipelines:
            core = self.cores[p["name"]]
            t0 = time.perf_counter()
            core.learner.warm_up()
            for s in core.shadows.values():
                s.warm_up()
            log.info("%s: kernels compiled in %.1fs", p["name"], time.perf_counter() - t0)
            changelog = None
            if p["changelog_topic"]:
                from connectors.changelog import create_changelog

                create_changelog(self.kafka_settings, p["changelog_topic"])
                changelog = {"topic": p["changelog_topic"], "settings": self.kafka_settings}
            source, sink = self._clients(p)
            runner = PipelineRunner(core, source, sink, self.cfg.checkpoint,
                                    {"decision": p["output_topic"], "dlq": p["dead_letter_topic"]}, changelog=changelog,
                                    committed_offsets=self._committed(p) if k["exactly_once"] else None)
            self.runners.append(runner)  # before restore: a failed start closes its clients too
            runner.restore()
            self._adopt_earlier_group_offsets(p, runner)
        # The loop allocates many small long-lived objects (pending decisions, remembered ids):
        # with the default thresholds the cyclic GC rescans them constantly (about 10% of the
        # processing time, measured). The process is the daemon's own, so it tunes its GC.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        for r in self.runners:
            th = threading.Thread(target=self._run_guarded, args=(r,), name=f"eddy-{r.core.name}", daemon=True)
            th.start()
            self.threads.append(th)
        if self.sidecar:
            self.sidecar.ready = True  # HTTP decisions: kernels compiled and state restored
            self.sidecar.readiness = self.readiness
        return self

    def _adopt_earlier_group_offsets(self, pc: dict[str, Any], runner: PipelineRunner) -> None:
        """The upgrade to one consumer group per pipeline, without checkpoints to resume from:
        when the pipeline's own group has committed nothing on its input topic yet, its partitions
        resume from the offsets that ``kafka.group_id`` (the group every pipeline shared before)
        committed there, instead of at ``auto_offset_reset``."""
        k, topic = self.cfg.kafka, pc["input_topic"]
        if self.owns_broker or pc["group_id"] != f"{k['group_id']}.{pc['name']}":
            return  # a fresh memory broker has no earlier group; an explicit group_id is the user's choice
        if any(key.rsplit(":", 1)[0] == topic for key in runner.positions):
            return  # the checkpoint's positions decide
        settings = self.kafka_settings
        try:
            if kafka_conn.committed_offsets(settings, pc["group_id"], topic):
                return
            earlier = kafka_conn.committed_offsets(settings, k["group_id"], topic)
        except Exception as e:  # an unreachable coordinator must not stop the start: the reset policy applies
            log.warning("%s: could not read the committed offsets of group %r: %s", pc["name"], k["group_id"], e)
            return
        if earlier:
            log.info("%s: group %r has committed nothing on %s yet: resuming from group %r's offsets %s",
                     pc["name"], pc["group_id"], topic, k["group_id"], earlier)
            runner.source.seek(earlier)

    def readiness(self) -> dict[str, dict[str, Any]]:
        """Per pipeline: consuming-ready (group joined, every assigned partition restored), and the
        partitions it owns. A spare member of a group, owning none, is ready."""
        return {r.core.name: r.readiness() for r in self.runners}

    def _run_guarded(self, r: PipelineRunner) -> None:
        """Runs a pipeline; a broker outage rebuilds its clients and resumes from the checkpoint."""
        while not self.stopping.is_set():
            try:
                r.run()
                return
            except Exception as e:
                if self.stopping.is_set():
                    return
                log.warning("%s: %s; rebuilding Kafka clients and resuming from the checkpoint", r.core.name, e)
                time.sleep(1.0)
                for old in (r.source.close, r.sink.abandon):  # a leaked client would retry forever
                    try:
                        old()
                    except Exception:
                        pass
                r.source, r.sink = self._clients(r.core.pc)
                r.error = None
                with r.lock:
                    r.restore()
                self.metrics.broker_reconnects.labels(pipeline=r.core.name, client=self.cfg.kafka["client"]).inc()

    def stop(self) -> None:
        """Graceful: stop consuming, finish the batch, publish, checkpoint, commit."""
        self.stopping.set()
        for r in self.runners:
            r.stop_event.set()
        for th in self.threads:
            th.join(timeout=60)
        for r in self.runners:
            for closer in (r.sink.close, r.source.close):
                try:
                    closer()
                except Exception as e:
                    log.debug("close: %s", e)
        if self.server is not None:
            self.server.should_exit = True
            for th in self.server_threads:
                th.join(timeout=10)
        if self.owns_broker and self.broker is not None:
            self.broker.stop()

    def wait(self) -> int:
        """Blocks until SIGTERM/SIGINT or a pipeline failure; returns the exit code."""
        done = threading.Event()

        def handler(signum, frame) -> None:
            log.info("signal %s: shutting down", signum)
            done.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        while not done.wait(0.2):
            if all(not th.is_alive() for th in self.threads):
                break
        self.stop()
        return 0 if all(r.error is None for r in self.runners) else 1
