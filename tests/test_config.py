from __future__ import annotations

import pytest

from daemon import config
from daemon.config import ConfigError

from .conftest import pipeline_cfg


def test_defaults_and_required():
    cfg = config.load_dict({"pipelines": [pipeline_cfg()]}, env=False)
    assert cfg.kafka["client"] == "kafka-python"
    assert cfg.pipelines[0]["dead_letter_topic"] == "routing-in.dlq"
    with pytest.raises(ConfigError, match="pipelines"):
        config.load_dict({}, env=False)


@pytest.mark.parametrize("raw,match", [
    ({"kafka": {"client": "librdkafka"}}, r"kafka.client: 'librdkafka' is not allowed; allowed: kafka-python, confluent-kafka"),
    ({"kafka": {"bogus": 1}}, r"kafka.bogus: unknown key; allowed keys: .*bootstrap_servers"),
    ({"http": {"port": "80"}}, r"http.port: expected an integer"),
    ({"kafka": {"security_protocol": "SASL_SSL", "bootstrap_servers": "k:9092"}}, r"sasl_mechanism.*PLAIN"),
    ({"kafka": {"security_protocol": "SSL"}}, r"embedded broker speaks PLAINTEXT"),
    ({"checkpoint": {"every_events": 0}}, r"checkpoint.every_events: 0 is below the minimum 1"),
])
def test_errors_name_the_key_and_allowed_values(raw, match):
    with pytest.raises(ConfigError, match=match):
        config.load_dict({**raw, "pipelines": [pipeline_cfg()]}, env=False)


def test_pipeline_errors():
    with pytest.raises(ConfigError, match=r"pipelines\[0\].learner: 'nope' is not allowed; allowed: .*squarecb"):
        config.load_dict({"pipelines": [pipeline_cfg(learner="nope")]}, env=False)
    with pytest.raises(ConfigError, match=r"pipelines\[0\].params: .*policy"):
        config.load_dict({"pipelines": [pipeline_cfg(params={"policy": "greedy"})]}, env=False)
    with pytest.raises(ConfigError, match=r"pipelines\[1\].name"):
        config.load_dict({"pipelines": [pipeline_cfg(), pipeline_cfg()]}, env=False)


def test_each_pipeline_consumes_in_a_group_of_its_own():
    """Consumers of different topics in one group kept rebalancing each other (kafka-python starved
    whole pipelines for over a minute): every pipeline gets <kafka.group_id>.<name> by default, an
    explicit group_id (e.g. an earlier release's group, to keep its committed offsets) is kept, and
    two pipelines in one group are refused."""
    cfg = config.load_dict({"kafka": {"group_id": "pay"},
                            "pipelines": [pipeline_cfg("a"), pipeline_cfg("b"), pipeline_cfg("c", group_id="eddy")]},
                           env=False)
    assert [p["group_id"] for p in cfg.pipelines] == ["pay.a", "pay.b", "eddy"]
    with pytest.raises(ConfigError, match=r"pipelines\[1\].group_id: 'pay.a' is pipeline 'a'.s consumer group too"):
        config.load_dict({"kafka": {"group_id": "pay"},
                          "pipelines": [pipeline_cfg("a"), pipeline_cfg("b", group_id="pay.a")]}, env=False)


def test_environment_overrides_secrets(monkeypatch):
    monkeypatch.setenv("EDDY_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("EDDY_HTTP_PORT", "9999")
    cfg = config.load_dict({"pipelines": [pipeline_cfg()]})
    assert cfg.kafka["sasl_password"] == "s3cret" and cfg.http["port"] == 9999
    monkeypatch.setenv("EDDY_HTTP_PORT", "many")
    with pytest.raises(ConfigError, match="EDDY_HTTP_PORT"):
        config.load_dict({"pipelines": [pipeline_cfg()]})


def test_toml_is_parsed_never_evaluated(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[[pipelines]]\nname = "__import__(\'os\').system(\'false\')"\ninput_topic="a"\noutput_topic="b"\n')
    with pytest.raises(ConfigError, match="name"):
        config.load(str(p))
    p.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(str(p))


def test_docs_cover_every_setting():
    text = config.docs_markdown()
    for schema in (config.KAFKA, config.HTTP, config.CHECKPOINT, config.PIPELINE):
        for s in schema:
            assert f"`{s.key}`" in text


def test_readme_holds_the_current_settings_table():
    import pathlib

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    assert config.docs_markdown().rstrip() in readme, "regenerate the README table: eddy config docs"


def test_readme_lists_every_metric():
    import pathlib

    from daemon.engine import Engine
    from daemon.metrics import DaemonMetrics

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    metrics = DaemonMetrics()
    for i, (learner, params) in enumerate([("squarecb", {"actions": ["a"]}), ("paging-learned-discard", {}),
                                           ("paging-robust-discard", {"byte_capacity": 1000}),
                                           ("groupwise-mixture", {"groups": ["g"]})]):
        cfg = config.load_dict({"pipelines": [{"name": f"p{i}", "learner": learner, "input_topic": "i",
                                               "output_topic": "o", "params": params}]}, env=False)
        Engine(cfg.pipelines[0], metrics)  # every family's collector exports its metrics too
    names = {m.name for m in metrics.registry.collect()}
    standard = ("process_", "python_")  # the client library's process and platform collectors
    missing = [n for n in names if f"`{n}" not in readme and f"`{n}_total" not in readme
               and not n.startswith(standard)]
    assert not missing, missing


def test_the_example_config_is_valid():
    """deploy/eddy.example.toml (all its pipelines) validates; only its TLS files are machine-specific."""
    import pathlib
    import tomllib

    raw = tomllib.loads((pathlib.Path(__file__).parents[1] / "deploy" / "eddy.example.toml").read_text())
    raw["kafka"].pop("ssl_cafile")
    cfg = config.load_dict(raw, env=False)
    assert [p["learner"] for p in cfg.pipelines] == ["squarecb", "squarecb-hashed", "paging-learned-discard",
                                                    "groupwise-mixture"]


def test_another_familys_setting_is_ignored_unless_exclusive(caplog):
    """Earlier releases took every family's keys on every pipeline: such files stay valid (the key
    is ignored, with a warning naming it); group_rules was always refused outside groupwise."""
    base = {"name": "p", "input_topic": "a", "output_topic": "b"}
    with caplog.at_level("WARNING", logger="eddy"):
        cfg = config.load_dict({"pipelines": [{**base, "cache_window": 10, "default_prediction": 0.5}]}, env=False)
    assert "cache_window" not in cfg.pipelines[0] and "default_prediction" not in cfg.pipelines[0]
    assert "pipelines[0].cache_window: a paging setting, ignored" in caplog.text
    with pytest.raises(ConfigError, match="group_rules: a groupwise setting"):
        config.load_dict({"pipelines": [{**base, "group_rules": {"x": "a < 1"}}]}, env=False)


@pytest.mark.parametrize("over, match", [
    ({"params": {"actions": "ab"}}, r"pipelines\[0\].params.actions: expected a list of strings, got 'ab'"),
    ({"params": {"gamma_scale": "10"}}, r"pipelines\[0\].params.gamma_scale: expected a number, got '10'"),
    ({"params": {"max_actions": 2.5}}, r"pipelines\[0\].params.max_actions: expected an integer"),
    ({"params": {"strict_actions": 1}}, r"pipelines\[0\].params.strict_actions: expected true or false"),
    ({"params": {"gama_scale": 3.0}}, r"params.gama_scale: not a parameter of 'squarecb' \(did you mean 'gamma_scale'\?\)"),
    ({"learner": "squarcb"}, r"learner: 'squarcb' is not allowed \(did you mean 'squarecb'\?\)"),
    ({"shadow_learners": ["linucbb"]}, r"shadow_learners: 'linucbb' is not allowed \(did you mean 'linucb'\?\)"),
    ({"default_action": "z", "params": {"actions": ["a", "b"]}}, r"default_action 'z' is not among"),
])
def test_param_types_names_and_default_action_are_checked(over, match):
    with pytest.raises(ConfigError, match=match):
        config.load_dict({"pipelines": [pipeline_cfg(**over)]}, env=False)


def test_misspelt_keys_get_a_suggestion_and_stray_environment_a_warning(monkeypatch, caplog):
    with pytest.raises(ConfigError, match=r"kafka.bootstrap_server: unknown key \(did you mean 'bootstrap_servers'\?\)"):
        config.load_dict({"kafka": {"bootstrap_server": "x"}, "pipelines": [pipeline_cfg()]}, env=False)
    monkeypatch.setenv("EDDY_KAFKA_BOOTSTRAP_SERVER", "k:9092")
    with caplog.at_level("WARNING", logger="eddy"):
        config.load_dict({"pipelines": [pipeline_cfg()]}, env=True)
    assert "EDDY_KAFKA_BOOTSTRAP_SERVER is not an eddy setting" in caplog.text
    assert "did you mean 'EDDY_KAFKA_BOOTSTRAP_SERVERS'" in caplog.text


def test_two_pipelines_on_one_input_topic_are_warned_about(caplog):
    with caplog.at_level("WARNING", logger="eddy"):
        config.load_dict({"pipelines": [pipeline_cfg(name="a", input_topic="t"), pipeline_cfg(name="b", input_topic="t")]},
                         env=False)
    assert "pipelines a, b all consume 't'" in caplog.text


def test_loading_goes_on_past_an_error_without_consequential_ones():
    """Every independent problem once; none that only follows from another (a pipeline that is no
    table, a learner that is no name, a duplicate name's consumer group)."""
    with pytest.raises(ConfigError) as e:
        config.load_dict({"kafka": 3, "pipelines": [1, pipeline_cfg("a", learner=5), pipeline_cfg("b"),
                                                    pipeline_cfg("b", params={"gamma_scale": "x"})]}, env=False)
    assert [x.split(":")[0] for x in e.value.errors] == [
        "[kafka] must be a table", "[pipelines[0]] must be a table", "pipelines[1].learner", "pipelines[3].name",
        "pipelines[3].params.gamma_scale"]
    assert e.value.lines()[2].startswith("pipelines[1] (a).learner: 5 is not allowed")
