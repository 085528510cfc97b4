"""The TOML config: defaults, and one clear error naming the key for each mistake."""

import tomllib
from pathlib import Path

import pytest

from sessionizer.config import ConfigError, build_spec, load_config, parse_config, parse_duration

EXAMPLE = Path(__file__).parents[2] / "examples" / "xtremepush.toml"


def spec_of(text: str, live: bool = False):
    return build_spec(parse_config(tomllib.loads(text)), live=live)


def error_of(text: str, live: bool = False) -> str:
    with pytest.raises(ConfigError) as caught:
        spec_of(text, live)
    return str(caught.value)


def test_the_example_config_loads():
    job = load_config(EXAMPLE)
    assert job.sessions.rules.gap == 600_000
    assert job.sessions.rules.max_duration == 600_000
    assert job.sessions.rules.max_events == 200
    assert [r.topic for r in job.rolling] == ["xp-rolling-2min", "xp-rolling-5min-game"]
    assert job.rolling[1].group_by == "value.game_code"
    assert job.fields.events == frozenset({"spin"})


def test_defaults_follow_the_spec():
    job = spec_of("[sessions]\n")
    assert job.fields.key == "user_id" and job.fields.time == "timestamp"
    assert job.fields.stake == "value.stake" and job.fields.channel == "value.channel"
    assert job.sessions.rules.gap == 600_000 and job.sessions.rules.grace == 0
    assert job.sessions.rules.max_duration is None and job.sessions.rules.max_events is None
    assert job.sessions.event_name == "session" and not job.sessions.stamp_end
    assert job.dead_letter_topic == "xp-dead-letter"
    rolling = spec_of('[[rolling]]\ntopic = "r"\nsize = "2m"\n').rolling[0]
    assert (rolling.rules.size, rolling.rules.advance, rolling.rules.grace) == (120_000, 120_000, 0)
    assert rolling.event_name == "session_summary" and rolling.group_by is None


@pytest.mark.parametrize("text, millis", [("250ms", 250), ("30s", 30_000), ("10m", 600_000), ("2h", 7_200_000),
                                          (1500, 1500), (0, 0)])
def test_durations(text, millis):
    assert parse_duration(text, "k") == millis


@pytest.mark.parametrize("text, message", [
    ("[sessions]\nfoo = 1\n", "sessions.foo: unknown key"),
    ("[input]\nkey = 5\n[sessions]\n", "input.key: expected a string, got an integer"),
    ("[sessions]\nmax_events = \"x\"\n", "sessions.max_events: expected an integer, got a string"),
    ("[sessions]\ngap = \"10 minutes\"\n", "sessions.gap: '10 minutes' is not a duration"),
    ("[sessions]\ngap = -5\n", "sessions.gap: -5 is negative"),
    ("[sessions]\ngrace = 1.5\n", "sessions.grace: expected an integer or a string, got a float"),
    ("[sessions]\nmax_events = 0\n", "sessions.max_events: 0 is less than 1"),
    ("[sessions]\ntimestamp = \"middle\"\n", "sessions.timestamp: 'middle' is neither"),
    ("[[rolling]]\ntopic = \"r\"\nsize = \"5m\"\nadvance = \"2m\"\n", "rolling[0].size: '5m' is not a multiple of"),
    ("[[rolling]]\ntopic = \"r\"\nsize = 0\n", "rolling[0].size: must be more than 0"),
    ("[[rolling]]\ntopic = \"r\"\n", "rolling[0].size: required key is missing"),
    ("[[rolling]]\nsize = \"2m\"\n", "rolling[0].topic: required key is missing"),
    ("[input]\n", "sessions: nothing to compute"),
    ("", "sessions: nothing to compute"),
    ("[sessions]\ntopic = \"t\"\n[[rolling]]\ntopic = \"t\"\nsize = \"2m\"\n",
     "rolling[0].topic: topic 't' is already used by sessions.topic"),
    ("[sessions]\n[dead_letter]\ntopic = \"xp-session-events\"\n", "dead_letter.topic: topic 'xp-session-events'"),
    ("[[rolling]]\ntopic = \"a\"\nsize = \"2m\"\n[[rolling]]\ntopic = \"a\"\nsize = \"5m\"\n",
     "rolling[1].topic: topic 'a' is already used by rolling[0].topic"),
    ("[sessions]\ntopic = \"has space\"\n", "sessions.topic: 'has space' is not a Kafka topic name"),
    ("[[rolling]]\ntopic = \"sessions\"\nsize = \"2m\"\n", "rolling[0].topic: 'sessions' names the sessions"),
    ("[input]\nstake = \"value..stake\"\n[sessions]\n", "input.stake: 'value..stake' is not a field path"),
    ("[input]\ntime = \"@timestamp\"\n[sessions]\n", "input.time: \"@timestamp\""),
    ("bogus = 1\n[sessions]\n", "bogus: unknown key"),
    ("sessions = 3\n", "sessions: expected a table, got an integer"),
    ("[input]\nevents = \"spin\"\n[sessions]\n", "input.events: expected an array, got a string"),
    # SPEC section 7
    ("[input.types.win]\ncounts = \"no\"\n[sessions]\n", "input.types.win.counts: expected a boolean, got a string"),
    ("[input.types.win]\nnegative = true\n[sessions]\n", "input.types.win.negative: unknown key"),
    ("[input.types.win]\nwin = \"a..b\"\n[sessions]\n", "input.types.win.win: 'a..b' is not a field path"),
    ("[input]\nevents = [\"BET\"]\n[input.types.WIN]\n[sessions]\n",
     "input.types.WIN: type 'WIN' is not in input.events"),
    ("[input]\ntypes = { win = 3 }\n[sessions]\n", "input.types.win: expected a table, got an integer"),
    ("[input]\nid = \"\"\n[sessions]\n", "input.id: '' is not a field path"),
    ("[input]\nevent = \"a.\"\n[sessions]\n", "input.event: 'a.' is not a field path"),
    ("[sessions]\n[[sessions.aggregates]]\nname = \"n\"\nkind = \"count\"\nfield = \"x\"\n",
     "sessions.aggregates[0].field: a count aggregate counts records and reads no field"),
    ("[sessions]\n[[sessions.aggregates]]\nname = \"net_total\"\nkind = \"sum\"\nfield = \"x\"\n",
     "sessions.aggregates[0].name: 'net_total' is already a key of the output value"),
    ("[sessions]\n[[sessions.aggregates]]\nname = \"a\"\nkind = \"sum\"\nfield = \"x\"\n"
     "[[sessions.aggregates]]\nname = \"a\"\nkind = \"max\"\nfield = \"x\"\n",
     "sessions.aggregates[1].name: 'a' is already the name of another aggregate here"),
    ("[[rolling]]\ntopic = \"r\"\nsize = \"2m\"\n[[rolling.aggregates]]\nname = \"window_end_ms\"\nkind = \"count\"\n",
     "rolling[0].aggregates[0].name: 'window_end_ms' is already a key of the output value"),
    ("[sessions]\n[[sessions.aggregates]]\nname = \"a\"\nkind = \"avg\"\nfield = \"x\"\n",
     "sessions.aggregates[0].kind: 'avg' is not one of sum, count, min, max, first, last, count_distinct"),
    ("[sessions]\n[[sessions.aggregates]]\nname = \"a\"\nkind = \"max\"\n",
     "sessions.aggregates[0].field: required for a max aggregate"),
    ("[sessions]\n[[sessions.aggregates]]\nkind = \"count\"\n", "sessions.aggregates[0].name: required key is missing"),
    ("[input]\nevents = [\"BET\"]\n[sessions]\n[[sessions.aggregates]]\nname = \"w\"\nkind = \"count\"\n"
     "types = [\"WIN\"]\n", "sessions.aggregates[0].types: 'WIN' is not in input.events"),
    ("[sessions]\n[[sessions.aggregates]]\nname = \"w\"\nkind = \"count\"\ntypes = []\n",
     "sessions.aggregates[0].types: empty"),
])
def test_bad_config_fails_with_a_message_that_names_the_key(text, message):
    assert error_of(text).startswith(message)


def test_kafka_timestamp_is_allowed_in_live_mode():
    assert spec_of("[input]\ntime = \"@timestamp\"\n[sessions]\n", live=True).fields.time == "@timestamp"


def test_unreadable_or_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.toml: cannot read the config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sessions\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


# -- the [kafka] and [runtime] tables (sessionizer run) ---------------------------------------

def run_settings_of(text: str):
    from sessionizer.config import build_run_settings

    config = parse_config(tomllib.loads(text))
    return build_run_settings(config, build_spec(config, live=True))


def test_run_settings_defaults():
    settings = run_settings_of("[sessions]\n[kafka]\nclient_id = \"worker-1\"\n")
    assert settings.bootstrap_servers == "localhost:9092"
    assert settings.input_topic == "xtremepush_events"
    assert settings.group_id == "sessionizer"
    assert settings.transactional_id == "sessionizer-worker-1"
    assert settings.idle_timeout_ms == 5000
    assert settings.commit_interval_ms == 250
    assert settings.changelog_topic("sessions") == "sessionizer-sessions-changelog"


def test_idle_timeout_off():
    assert run_settings_of("[sessions]\n[runtime]\nidle_timeout = \"off\"\n").idle_timeout_ms is None


def test_pass_through_librdkafka_properties():
    settings = run_settings_of('[sessions]\n[kafka.consumer]\n"fetch.min.bytes" = 1000\n'
                               '[kafka.common]\n"security.protocol" = "SSL"\n')
    assert settings.consumer == {"fetch.min.bytes": 1000}
    assert settings.common == {"security.protocol": "SSL"}


@pytest.mark.parametrize("text, message", [
    ("[sessions]\n[kafka.consumer]\n\"enable.auto.commit\" = true\n", "kafka.consumer.enable.auto.commit: set by"),
    ("[sessions]\n[kafka.producer]\n\"transactional.id\" = \"x\"\n", "kafka.producer.transactional.id: set by"),
    ("[sessions]\n[kafka]\ninput_topic = \"xp-session-events\"\n", "kafka.input_topic: 'xp-session-events' is also"),
    ("[sessions]\n[kafka]\nbootstrap = \"x\"\n", "kafka.bootstrap: unknown key"),
    ("[sessions]\n[runtime]\nidle_timeout = \"soon\"\n", "runtime.idle_timeout: 'soon' is not a duration"),
    ("[sessions]\n[runtime]\ncommit_interval = 0\n", "runtime.commit_interval: must be more than 0"),
    ("[sessions]\n[runtime]\nlog_format = \"xml\"\n", "runtime.log_format: 'xml' is neither"),
])
def test_bad_run_settings_name_the_key(text, message):
    with pytest.raises(ConfigError) as caught:
        run_settings_of(text)
    assert str(caught.value).startswith(message)


# -- the [xtremepush] table (sessionizer forward) -----------------------------------------------

def forward_settings_of(tmp_path, text: str):
    from sessionizer.forward.settings import load_forward_settings

    path = tmp_path / "f.toml"
    path.write_text("[sessions]\n[[rolling]]\ntopic = \"r\"\nsize = \"2m\"\n" + text)
    return load_forward_settings(path)


def test_forward_defaults_to_every_final_topic(tmp_path, monkeypatch):
    monkeypatch.setenv("XP", "xp-secret-value")
    settings = forward_settings_of(tmp_path, '[xtremepush]\nkind = "http"\napp_token_env = "XP"\n')
    assert settings.topics == ["xp-session-events", "r"]
    assert settings.group_id == "sessionizer-forward"
    assert settings.url == "https://external-api.xtremepush.com/api/external/hit/event"
    assert settings.app_token.reveal() == "xp-secret-value"
    assert "xp-secret-value" not in repr(settings)


@pytest.mark.parametrize("text, message", [
    ("", "xtremepush: sessionizer forward needs an [xtremepush] table"),
    ('[xtremepush]\nkind = "smtp"\n', "xtremepush.kind: 'smtp' is neither"),
    ('[xtremepush]\nkind = "http"\ntopics = ["xp-dead-letter"]\napp_token_env = "XP"\n',
     "xtremepush.topics: 'xp-dead-letter' is not an output"),
    ('[xtremepush]\nkind = "http"\nmax_batch = 5000\napp_token_env = "XP"\n', "xtremepush.max_batch: 5000 is outside"),
    ('[xtremepush]\nkind = "http"\n', "xtremepush.app_token_env: platform xtremepush http needs app token"),
    ('[xtremepush]\nkind = "kafka"\n', "xtremepush.bootstrap_servers:"),
    ('[xtremepush]\nkind = "kafka"\nbootstrap_servers = "x:9096"\nusername_env = "NOPE_UNSET"\npassword_env = "XP"\n',
     "xtremepush.username_env: environment variable NOPE_UNSET is not set"),
])
def test_bad_forward_settings_name_the_key(tmp_path, monkeypatch, text, message):
    monkeypatch.setenv("XP", "token")
    with pytest.raises(ConfigError) as caught:
        forward_settings_of(tmp_path, text)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("name, platform, kind", [("confluent-cloud", "confluent-cloud", "kafka"),
                                                  ("msk-iam", "msk-iam", "http"), ("gcp", "gcp", "kafka")])
def test_the_platform_examples_load(monkeypatch, name, platform, kind):
    from sessionizer.forward.settings import load_forward_settings

    for var in ("CONFLUENT_API_KEY", "CONFLUENT_API_SECRET", "XTREMEPUSH_USERNAME", "XTREMEPUSH_PASSWORD",
                "XTREMEPUSH_APP_TOKEN"):
        monkeypatch.setenv(var, "x")
    settings = load_forward_settings(EXAMPLE.parent / f"{name}.toml")
    assert (settings.source.platform.platform, settings.kind) == (platform, kind)


def test_static_members_get_the_eager_assignor_unless_they_choose_one():
    """A static member killed between a cooperative rebalance's two steps strands partitions."""
    from sessionizer.kafka.clients import consumer_config

    def strategy(consumer: str) -> str:
        return consumer_config(run_settings_of(f"[sessions]\n[kafka.consumer]\n{consumer}"))["partition.assignment.strategy"]

    assert strategy("") == "cooperative-sticky"
    assert strategy('"group.instance.id" = "worker-1"\n') == "range"
    assert strategy('"group.instance.id" = "worker-1"\n"partition.assignment.strategy" = "roundrobin"\n') == "roundrobin"
