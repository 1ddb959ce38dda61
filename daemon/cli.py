"""The ``eddy`` command: run, demo, replay, checkpoint inspect, config, learners."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

from .config import ConfigError

log = logging.getLogger("eddy")


LOG_LEVELS = ("debug", "info", "warning", "error")


class JsonLines(logging.Formatter):
    """One JSON object per log line: time (ISO 8601, UTC), level, logger, message (and the
    exception's text when there is one), for log shippers that parse lines."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt

        out = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    logging.getLogger("kafka").setLevel(logging.ERROR)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("eddyd")
    except importlib.metadata.PackageNotFoundError:  # (run from a source tree)
        return "unknown"


def cmd_run(args) -> int:
    from . import config
    from .app import Daemon
    from .checkpoint import CheckpointError

    cfg = config.load(args.config)
    try:
        d = Daemon(cfg).start()  # a failed start has stopped all it started (broker, clients, server)
    except (CheckpointError, OSError, RuntimeError) as e:
        log.debug("start failed", exc_info=True)
        print(f"eddy: start failed: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a Kafka client's error (no broker, authentication...): a message, not a traceback
        if not type(e).__module__.startswith(("kafka", "confluent_kafka")):
            raise
        log.debug("start failed", exc_info=True)
        print(f"eddy: start failed: Kafka at {cfg.kafka['bootstrap_servers']!r}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(f"eddy running; metrics at http://{cfg.http['host']}:{d.http_port}/metrics" if d.http_port
          else "eddy running", file=sys.stderr, flush=True)
    return d.wait()


def replay(cfg, events: str, out: str, dlq: str | None, state: str | None, pipeline: str | None) -> dict:
    """Runs one pipeline over a JSON-lines file; returns the evaluation report."""
    from connectors.files import JsonLinesSink, JsonLinesSource

    from .families import make_core
    from .runner import PipelineRunner

    pcs = [p for p in cfg.pipelines if pipeline in (None, p["name"])]
    if not pcs:
        raise ConfigError(f"no pipeline {pipeline!r}; pipelines: {', '.join(p['name'] for p in cfg.pipelines)}")
    pc = pcs[0]
    core = make_core(pc)
    sink = JsonLinesSink({"decisions": out, **({"dlq": dlq} if dlq else {})})
    tmp = None
    if state is None:
        tmp = tempfile.TemporaryDirectory(prefix="eddy-replay-")
        state = tmp.name
    ckpt = {**cfg.checkpoint, "dir": state, "every_seconds": 1e9}
    runner = PipelineRunner(core, JsonLinesSource(events), sink, ckpt,
                            {"decision": "decisions", "dlq": "dlq"}, stop_at_end=True)
    runner.restore()
    runner.run()
    sink.close()
    if tmp:
        tmp.cleanup()
    m = core.metrics.registry
    name = pc["name"]
    report = core.report()
    report["events"] = int(m.get_sample_value("eddy_events_total", {"pipeline": name, "kind": "event"}) or 0)
    if core.feedback_type is not None:
        report["feedback"] = int(m.get_sample_value("eddy_events_total", {"pipeline": name,
                                                                          "kind": core.feedback_type}) or 0)
        report["decisions"] = int(sum(m.get_sample_value("eddy_decisions_total", {"pipeline": name, "source": s})
                                      or 0 for s in ("kafka", "http")))
        # Decisions whose feedback had not come when the file ended: not learned, not in the OPE yet.
        report["waiting_at_end"] = sum(len(lane.buffer) for lane in core.lanes.values())
    report["dead_letters"] = {k: int(v) for k, v in _dead_letters(m).items()}
    return report


def _dead_letters(m) -> dict[str, float]:
    return {s.labels["reason"]: s.value for fam in m.collect() if fam.name == "eddy_dead_letter_messages"
            for s in fam.samples if s.name.endswith("_total")}


def cmd_replay(args) -> int:
    from . import config

    if args.trace:
        return replay_trace(args)
    if args.sequence:
        from . import sequences

        return sequences.cmd(args)
    if not args.config or not args.events:
        raise ConfigError("replay needs --config and --events (a pipeline over a JSON-lines file), "
                          "--trace (a cache trace through the cache policies) or --sequence (linear systems "
                          "through the ω policies)")
    cfg = config.load(args.config)
    report = replay(cfg, args.events, args.out, args.dead_letters, args.state, args.pipeline)
    text = json.dumps(report, indent=2, default=float)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def replay_trace(args) -> int:
    """A cache trace through the cache policies at several sizes: table (and JSON, PNG)."""
    from . import traces

    return traces.cmd(args)


def cmd_checkpoint(args) -> int:
    """Exit 0 when every pipeline found has an intact checkpoint, 1 otherwise."""
    from .checkpoint import CheckpointError, inspect

    try:
        out = inspect(args.path)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"eddy: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, default=str))
    stores = out["pipelines"].values() if "pipelines" in out else [out]
    return 0 if all(s.get("intact") or s.get("latest_intact") for s in stores) else 1


def cmd_config(args) -> int:
    from . import config

    if args.action == "docs":
        print(config.docs_markdown())
        return 0
    if not args.file:
        raise ConfigError("config check needs a file: eddy config check FILE")
    config.load(args.file)
    print(f"{args.file}: ok")
    return 0


def cmd_learners(args) -> int:
    """Each learner: its name, family and a one-line description (its class's, and a preset's settings)."""
    import learners
    from learners.base import factory_of

    rows = []
    for name in learners.names():
        factory = factory_of(name)
        cls = getattr(factory, "func", factory)
        para = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        doc = para.split(". ")[0].split(": ")[0].rstrip(".")  # (its first sentence, to its first colon)
        preset = ", ".join(f"{k}={v}" for k, v in getattr(factory, "keywords", {}).items())
        rows.append((name, learners.family_of(name), doc + (f" ({preset})" if preset else "")))
    width = max(len(r[0]) for r in rows)
    fam = max(len(r[1]) for r in rows)
    print("\n".join(f"{n:<{width}}  {f:<{fam}}  {d}" for n, f, d in rows))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(limit=args.events, client=args.client, port=args.port, bootstrap=args.bootstrap_servers,
                    metrics_url=args.metrics_url)


def parser() -> argparse.ArgumentParser:
    """The command line: every option with its help text."""
    ap = argparse.ArgumentParser(prog="eddy", description="streaming online-learning daemon")
    ap.add_argument("--version", action="version", version=f"eddy {_version()}")
    ap.add_argument("--log-level", default=os.environ.get("EDDY_LOG_LEVEL", "info").lower(), choices=LOG_LEVELS,
                    help="log level (default: $EDDY_LOG_LEVEL or info)")
    ap.add_argument("--log-format", default=os.environ.get("EDDY_LOG_FORMAT", "text").lower(),
                    choices=("text", "json"), help="log lines as text or one JSON object each (default: "
                    "$EDDY_LOG_FORMAT or text)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run the daemon against Kafka")
    p.add_argument("--config", required=True, help="the TOML config (check it with: eddy config check FILE)")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("demo", help="embedded broker + daemon + a real data set replayed through it")
    p.add_argument("--events", type=int, default=50_000, help="flights to replay (0: all 336,776)")
    p.add_argument("--client", default="kafka-python", choices=["kafka-python", "confluent-kafka"],
                   help="Kafka client library")
    p.add_argument("--port", type=int, default=0, help="HTTP port of the sidecar and /metrics (0: free)")
    p.add_argument("--bootstrap-servers", default="", help="replay into this Kafka, where an eddy daemon runs the "
                   "demo's pipeline (topics payments and decisions; the compose file's): no embedded broker, no "
                   "daemon of its own")
    p.add_argument("--metrics-url", default="", help="with --bootstrap-servers: the daemon's /metrics, for the "
                   "progress lines")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("replay", help="events file in → decisions and an evaluation report out; or a cache "
                       "trace → miss-ratio table and plot")
    p.add_argument("--config", default=None, help="--events: the TOML config whose pipeline runs over the file")
    p.add_argument("--events", default=None, help="JSON-lines events and feedback ('-' for stdin)")
    p.add_argument("--trace", default=None, help="a cache trace (CSV with obj_id, or one key per line; .xz/.gz)")
    p.add_argument("--sequence", default=None, help="a sequence of linear systems, or of iteration counts per ω, "
                   "one JSON object per line (see daemon/sequences.py)")
    p.add_argument("--sizes", default="0.001,0.003,0.01,0.03,0.1",
                   help="--trace: cache sizes, fractions of the unique keys (< 1) or pages")
    p.add_argument("--policies", default="lru,fifo,sieve,s3fifo,arc,learned-discard", help="--trace: policies")
    p.add_argument("--limit", type=int, default=0, help="--trace: first N requests (0: all)")
    p.add_argument("--plot", default=None, help="--trace: write a PNG of miss ratio against cache size; --sequence: "
                   "of cumulative iterations over the sequence")
    p.add_argument("--json", default=None, help="--trace, --sequence: write the rows as JSON")
    p.add_argument("--out", default="-", help="decisions JSON-lines ('-' for stdout)")
    p.add_argument("--dead-letters", default=None, help="--events: write dead letters (with their reasons) "
                   "to this JSON-lines file")
    p.add_argument("--report", default=None, help="--events: write the evaluation report (JSON) to this file "
                   "too")
    p.add_argument("--state", default=None, help="checkpoint directory (default: a temporary one)")
    p.add_argument("--pipeline", default=None, help="--events: the config's pipeline to run (default: its first)")
    p.set_defaults(fn=cmd_replay)
    p = sub.add_parser("checkpoint", help="checkpoint tools")
    p.add_argument("action", choices=["inspect"], help="inspect: what each checkpoint holds, and whether it is intact")
    p.add_argument("path", help="the configured checkpoint.dir, one pipeline's directory under it, or a ckpt-N.json")
    p.set_defaults(fn=cmd_checkpoint)
    p = sub.add_parser("config", help="check a config file or print the settings table")
    p.add_argument("action", choices=["check", "docs"], help="check: validate FILE; docs: print the "
                   "settings table")
    p.add_argument("file", nargs="?", help="check: the TOML config")
    p.set_defaults(fn=cmd_config)
    p = sub.add_parser("learners", help="list the registered learners: name, family, description")
    p.set_defaults(fn=cmd_learners)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    try:
        return int(args.fn(args))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # (eddy learners | head -1): the reader left; nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ImportError, RuntimeError) as e:  # a missing extra, a failed start: the message, not a traceback
        log.debug("failed", exc_info=True)
        print(f"eddy: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from .checkpoint import CheckpointError

        if not isinstance(e, CheckpointError):
            raise
        print(f"eddy: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
