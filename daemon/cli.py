"""The ``eddy`` command: run, demo, replay, evaluate, checkpoint inspect, config, learners."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

from connectors.files import JsonLinesSource

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


def _config_errors(e: ConfigError, source: str | None = None) -> None:
    """Every problem of a config on stderr, one line each (and how many, when more than one)."""
    for line in e.lines():
        print(f"config error: {line}", file=sys.stderr)
    if len(e.errors) > 1:
        print(f"eddy: {source or 'the config'}: {len(e.errors)} errors", file=sys.stderr)


def _load_config(path: str, topics: bool = True):
    """The config file, or None when it has errors (all of them printed)."""
    from . import config

    try:
        return config.load(path, topics=topics)
    except ConfigError as e:
        _config_errors(e, path)
        return None


def cmd_run(args) -> int:
    from .app import Daemon
    from .checkpoint import CheckpointError

    cfg = _load_config(args.config)
    if cfg is None:
        return 1
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


class ProgressSource(JsonLinesSource):
    """The JSON-lines file source, writing a progress line to stderr at most every ``every_s``
    seconds and once at the end of the file: lines read, the share of the file, the rate and the
    time left (on a terminal the line is rewritten in place)."""

    def __init__(self, path: str, every_s: float = 1.0):
        super().__init__(path)
        self.total = os.path.getsize(path) if path != "-" and os.path.isfile(path) else 0
        self.every_s = every_s
        self.tty = sys.stderr.isatty()
        self.t0 = self.shown = time.monotonic()
        self.ended = False
        self.width = 0

    def poll(self, max_records: int, timeout_s: float):
        out = super().poll(max_records, timeout_s)
        now = time.monotonic()
        if self.at_end() and not self.ended:
            self.ended = True
            self.show(now, end=True)
        elif now - self.shown >= self.every_s and not self.ended:
            self.show(now)
        return out

    def show(self, now: float, end: bool = False) -> None:
        self.shown = now
        took = max(now - self.t0, 1e-9)
        text = f"replay: {self._line:,} lines"
        if self.total:
            done = self._f.tell()
            text += f" ({100 * done / self.total:.0f}% of {self.total:,} bytes)"
            if not end and done:
                left = (self.total - done) * took / done
                text += f", about {left:.0f} s left" if left >= 1 else ", under 1 s left"
        text += f", {self._line / took:,.0f} lines/s, {took:.1f} s"
        if end:
            text += ": end of file"
        if self.tty:  # (rewritten in place: padded over a longer line before it)
            self.width = max(self.width, len(text))
            text = "\r" + text.ljust(self.width) + ("\n" if end else "")
        print(text, end="" if self.tty else "\n", file=sys.stderr, flush=True)


def replay(cfg, events: str, out: str, dlq: str | None, state: str | None, pipeline: str | None,
           progress: bool = False) -> dict:
    """Runs one pipeline over a JSON-lines file; returns the evaluation report. ``progress``: a
    progress line on stderr (see :class:`ProgressSource`)."""
    from connectors.files import JsonLinesSink

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
    source = ProgressSource(events) if progress else JsonLinesSource(events)
    runner = PipelineRunner(core, source, sink, ckpt,
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
    if not args.events or bool(args.config) == bool(args.learner):
        both = "; --config and --learner: give one (the config's pipeline names its learner)"
        raise ConfigError("replay needs --events with --config or --learner (a pipeline over a JSON-lines file), "
                          "--trace (a cache trace through the cache policies) or --sequence (linear systems "
                          "through the ω policies)" + (both if args.config and args.learner else ""))
    if args.learner:
        import learners

        if args.learner not in learners.names():
            near = config._suggest(args.learner, learners.names())
            raise ConfigError(f"--learner: {args.learner!r} is not a learner{near}; 'eddy learners' lists them")
        try:
            cfg = config.load_dict({"pipelines": [{"name": args.learner, "learner": args.learner}]},
                                   source=f"--learner {args.learner}", topics=False)
        except ConfigError as e:  # (a learner that needs parameters: a config sets them)
            hint = "(a config's [pipelines.params] sets parameters: use --config)"
            raise ConfigError([f"--learner {args.learner}: {err.removeprefix('pipelines[0]').lstrip('.')} {hint}"
                               for err in e.errors]) from None
    else:
        cfg = _load_config(args.config, topics=False)
        if cfg is None:
            return 1
    if args.events != "-" and not os.path.isfile(args.events):
        raise ConfigError(f"--events: file {args.events!r} not found")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    report = replay(cfg, args.events, args.out, args.dead_letters, args.state, args.pipeline, progress)
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
    """Exit 0 when every pipeline found has an intact checkpoint (the one start-up restores), 1 when
    one has checkpoints but none intact (start-up would fail; each named on stderr) or the path
    cannot be read, 2 when there is nothing to inspect (no such path, no checkpoint there, a file
    that is no checkpoint, a config with errors)."""
    from .checkpoint import CheckpointError, NoCheckpoint, inspect, inspect_configured

    if bool(args.path) == bool(args.config):
        raise ConfigError("checkpoint inspect needs a PATH or --config FILE (one of them)")
    try:
        if args.config:
            cfg = _load_config(args.config, topics=False)
            if cfg is None:
                return 2
            out = inspect_configured(cfg.checkpoint["dir"], [p["name"] for p in cfg.pipelines], args.config)
        else:
            out = inspect(args.path)
    except NoCheckpoint as e:
        print(f"eddy: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"eddy: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, default=str))
    stores = out["pipelines"] if "pipelines" in out else {"": out}
    bad = 0
    for name, st in stores.items():
        label = f" (pipeline {name})" if name else ""
        if "intact" in st and not st["intact"]:
            print(f"eddy: {st['path']}{label} is damaged: {st['error'].removeprefix(st['path'] + ': ')}",
                  file=sys.stderr)
            bad += 1
        elif st.get("checkpoints") and not st.get("latest_intact"):
            why = "; ".join(f"{os.path.basename(r['path'])}: {r['error'].removeprefix(r['path'] + ': ')}"
                            for r in st["checkpoints"])
            print(f"eddy: no intact checkpoint in {st['dir']}{label}, start-up would fail: {why}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


def cmd_config(args) -> int:
    from . import config

    if args.action == "docs":
        print(config.docs_markdown())
        return 0
    if not args.file:
        raise ConfigError("config check needs a file: eddy config check FILE")
    cfg = _load_config(args.file)
    if cfg is None:
        return 1
    print(f"{args.file}: ok ({len(cfg.pipelines)} pipeline{'s' if len(cfg.pipelines) > 1 else ''}: "
          + ", ".join(f"{p['name']} ({p['learner']})" for p in cfg.pipelines) + ")")
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
                       "trace → miss-ratio table and plot",
                       description="--events with --config or --learner: one pipeline over a JSON-lines file (no "
                       "Kafka: a replay config needs no [kafka] section nor topics); --trace: a cache trace through "
                       "the paging policies and Belady's optimum; --sequence: linear systems through the ω "
                       "policies")
    p.add_argument("--config", default=None, help="--events: the TOML config whose pipeline runs over the file "
                   "(input_topic and output_topic may be left out: only 'eddy run' needs them)")
    p.add_argument("--learner", default=None, help="--events, instead of --config: a pipeline of this learner "
                   "(see 'eddy learners') with every setting at its default")
    p.add_argument("--events", default=None, help="JSON-lines events and feedback ('-' for stdin)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="--events: a progress line on stderr (lines read, share of the file, rate, time left) at "
                   "most once a second and at the end (default: when stderr is a terminal)")
    p.add_argument("--trace", default=None, help="a cache trace (CSV with obj_id, or one key per line; .xz/.gz)")
    p.add_argument("--sequence", default=None, help="a sequence of linear systems, or of iteration counts per ω, "
                   "one JSON object per line (see daemon/sequences.py)")
    p.add_argument("--sizes", default="0.001,0.003,0.01,0.03,0.1",
                   help="--trace: cache sizes, comma-separated: a whole number is pages (1 = one page); a decimal "
                   "number in (0, 1] or a percentage is a share of the trace's unique keys (1.0 = 100%%, "
                   "0.5 = 50%%)")
    p.add_argument("--policies", default="lru,fifo,sieve,s3fifo,arc,learned-discard",
                   help="--trace: policies, comma-separated, case-insensitive (Belady's optimum is always shown; "
                   "OPT or belady names it)")
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
    from . import evaluate as evaluate_cmd

    p = sub.add_parser("evaluate", help="estimate the configured bandit learners off-policy on another router's "
                       "logged decisions (IPS, SNIPS, DR with confidence intervals; JSON lines or Parquet)")
    evaluate_cmd.add_arguments(p)
    p.set_defaults(fn=evaluate_cmd.cmd)
    p = sub.add_parser("checkpoint", help="checkpoint tools", description="exit status: 0 every pipeline found has "
                       "an intact checkpoint (the newest intact one is what start-up restores); 1 one has checkpoints "
                       "but none intact (start-up would fail), or the path cannot be read; 2 nothing to inspect (no "
                       "such path, no checkpoint there, a file that is not a checkpoint)")
    p.add_argument("action", choices=["inspect"], help="inspect: what each checkpoint holds, and whether it is intact")
    p.add_argument("path", nargs="?", help="the configured checkpoint.dir, one pipeline's directory under it, or a "
                   "ckpt-N.json")
    p.add_argument("--config", default=None, help="instead of PATH: the checkpoints of this config's pipelines "
                   "under its checkpoint.dir")
    p.set_defaults(fn=cmd_checkpoint)
    p = sub.add_parser("config", help="check a config file or print the settings table")
    p.add_argument("action", choices=["check", "docs"], help="check: validate FILE (every error is reported, "
                   "one line each naming its key; exit status 1 when there is any); docs: print the settings table")
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
    except ConfigError as e:  # (a command line's: a config file's errors exit 1, see _load_config)
        _config_errors(e)
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
