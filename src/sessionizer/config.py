"""The TOML config: read, validate, and turn into the core's JobSpec.

Every problem is a ConfigError whose message starts with the key it is about
(`sessions.gap: ...`, `rolling[1].topic: ...`), raised before any record is read.
"""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .core.events import KAFKA_TIMESTAMP, InputFields
from .core.sessions import SessionRules
from .core.shapes import AGGREGATE_KINDS, COUNT, AggregateSpec, TypeFields
from .core.spec import JobSpec, RollingOutput, SessionOutput
from .core.windows import WindowRules
from .platforms import PlatformError, PlatformSettings, platform_settings


class ConfigError(ValueError):
    pass


Duration = str | int


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class InputTable(_Table):
    key: str = "user_id"
    time: str = "timestamp"
    stake: str = "value.stake"
    win: str = "value.win"
    game_code: str = "value.game_code"
    channel: str = "value.channel"
    events: list[str] = []
    event: str = "event"  # the path of the record's type
    id: str | None = None  # the path of a record id: copies of a held record are duplicates
    types: dict[str, Any] = {}  # [input.types.<name>]: TypeTable each (checked one by one, to name the key)


class TypeTable(_Table):
    """`[input.types.<name>]`: where records of that type keep their fields ("" = nowhere)."""

    stake: str | None = None  # None: the [input] path
    win: str | None = None
    game_code: str | None = None
    channel: str | None = None
    counts: bool = True
    negate: bool = False


class AggregateTable(_Table):
    name: str
    kind: str
    field: str | None = None
    types: list[str] | None = None


class SessionsTable(_Table):
    topic: str = "xp-session-events"
    gap: Duration = "10m"
    grace: Duration = 0
    max_duration: Duration | None = None
    max_events: int | None = None
    event_name: str = "session"
    timestamp: str = "start"
    aggregates: list[AggregateTable] = []


class RollingTable(_Table):
    topic: str
    size: Duration
    advance: Duration | None = None
    grace: Duration = 0
    group_by: str | None = None
    event_name: str = "session_summary"
    aggregates: list[AggregateTable] = []


class DeadLetterTable(_Table):
    topic: str = "xp-dead-letter"


KafkaProperty = str | int | float | bool


class AuthTable(_Table):
    """Credentials for `kafka.platform`: every secret is `<name>_env` (an environment variable)
    or `<name>_file` (a file holding it), never a value in the TOML itself."""

    method: str = "api-key"  # confluent-cloud: "api-key" or "oidc"
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_secret_env: str | None = None
    api_secret_file: str | None = None
    client_id_env: str | None = None  # oidc
    client_id_file: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    token_endpoint: str | None = None
    scope: str | None = None
    logical_cluster: str | None = None
    identity_pool_id: str | None = None
    region: str | None = None  # msk-iam
    role_arn: str | None = None
    profile: str | None = None
    username_env: str | None = None  # msk-scram
    username_file: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    certificate: str | None = None  # msk-tls
    key: str | None = None
    key_password_env: str | None = None
    key_password_file: str | None = None
    ca: str | None = None  # any TLS platform: a CA bundle, when the system's does not apply
    credentials_file: str | None = None  # gcp (default: Application Default Credentials); gcp-plain: the key file
    service_account: str | None = None  # gcp-plain: the account's email (default: client_email of the key file)
    token_provider: str | None = None  # "module:factory": a custom OAUTHBEARER token provider


class KafkaTable(_Table):
    platform: str = "local"
    auth: AuthTable = msgspec.field(default_factory=AuthTable)
    bootstrap_servers: str = "localhost:9092"
    input_topic: str = "xtremepush_events"
    group_id: str = "sessionizer"
    client_id: str | None = None  # default: the host name; names this process's transactional id
    transactional_id: str | None = None  # default: "<group_id>-<client_id>"
    consumer: dict[str, KafkaProperty] = {}  # librdkafka properties, passed through
    producer: dict[str, KafkaProperty] = {}
    common: dict[str, KafkaProperty] = {}  # for the consumer, the producer and the admin client


LOG_LEVELS = ("debug", "info", "warning", "error")


class RuntimeTable(_Table):
    idle_timeout: Duration = "5s"  # or "off"
    commit_interval: Duration = "250ms"  # how often a transaction commits
    batch_size: int = 5000  # records taken per poll at most
    status_interval: Duration = "10s"  # or "off"
    log_format: str = "text"  # or "json"
    log_level: str = "info"  # or "debug" (with librdkafka's own lines), "warning", "error"


class XtremepushTable(_Table):
    """`sessionizer forward`: where the committed final records go."""

    kind: str = "kafka"  # or "http"
    topics: list[str] = []  # default: the sessions topic and every rolling topic
    group_id: str | None = None  # default: "<kafka.group_id>-forward"
    # kind = "kafka": the events topic Xtremepush provisions (SCRAM-SHA-512 over TLS)
    bootstrap_servers: str | None = None
    topic: str = "events"
    username_env: str | None = None
    username_file: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca: str | None = None
    # kind = "http": the hit/event API
    url: str = "https://external-api.xtremepush.com/api/external/hit/event"
    app_token_env: str | None = None
    app_token_file: str | None = None
    oauth_token_url: str | None = None  # instead of an app token: OAuth client credentials
    client_id_env: str | None = None
    client_id_file: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    scope: str | None = None
    max_batch: int = 1000
    max_batch_bytes: int = 1_000_000
    timeout: Duration = "10s"
    max_retry_delay: Duration = "60s"


class MetricsTable(_Table):
    """The monitoring endpoints of `run` and `forward`: /metrics, /healthz, /readyz and a status page."""

    port: int | None = None  # off unless set
    host: str = "127.0.0.1"  # "0.0.0.0" in a container, so the kubelet and Prometheus reach it
    stuck_after: Duration = "60s"  # /healthz turns 503 when the main loop has not moved for this long


class ConfigFile(_Table):
    input: InputTable = msgspec.field(default_factory=InputTable)
    sessions: SessionsTable | None = None
    rolling: list[RollingTable] = []
    dead_letter: DeadLetterTable = msgspec.field(default_factory=DeadLetterTable)
    kafka: KafkaTable = msgspec.field(default_factory=KafkaTable)
    runtime: RuntimeTable = msgspec.field(default_factory=RuntimeTable)
    xtremepush: XtremepushTable | None = None
    metrics: MetricsTable = msgspec.field(default_factory=MetricsTable)


_DURATION = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_duration(value: Any, key: str) -> int:
    """`250ms`, `30s`, `10m`, `2h`, or an integer of milliseconds."""
    if type(value) is int:
        if value < 0:
            raise ConfigError(f"{key}: {value} is negative; a duration is >= 0")
        return value
    if type(value) is str:
        match = _DURATION.fullmatch(value.strip())
        if match:
            return int(match.group(1)) * _UNIT_MS[match.group(2)]
    raise ConfigError(f"{key}: {value!r} is not a duration (like \"250ms\", \"30s\", \"10m\", \"2h\", or milliseconds)")


@dataclass(frozen=True)
class MetricsSettings:
    host: str
    port: int  # 0: any free port (tests)
    stuck_after_s: float


@dataclass(frozen=True)
class RunSettings:
    """Everything `sessionizer run` needs: the job, where Kafka is, and how the runtime behaves."""

    spec: JobSpec
    bootstrap_servers: str
    input_topic: str
    group_id: str
    client_id: str
    transactional_id: str
    consumer: dict[str, Any]
    producer: dict[str, Any]
    common: dict[str, Any]
    idle_timeout_ms: int | None  # None: idle partitions keep their stream time
    commit_interval_ms: int
    batch_size: int
    status_interval_ms: int | None
    log_format: str
    platform: PlatformSettings  # how to reach and authenticate to Kafka (secrets inside: never logged)
    metrics: MetricsSettings | None = None  # None: no monitoring endpoints
    config: ConfigFile | None = None  # the file as read, shown on the status page
    log_level: str = "info"

    def changelog_topic(self, store: str) -> str:
        """Kafka Streams' naming: <application id>-<store>-changelog."""
        return f"{self.group_id}-{store}-changelog"


def load_config(path: str | Path, *, live: bool = False) -> JobSpec:
    """Read and validate a config file; `live` is False for replay (no Kafka timestamps)."""
    return build_spec(read_config_file(path), live=live)


def load_run_settings(path: str | Path) -> RunSettings:
    config = read_config_file(path)
    return build_run_settings(config, build_spec(config, live=True))


def build_run_settings(config: ConfigFile, spec: JobSpec) -> RunSettings:
    k, r = config.kafka, config.runtime
    if not k.bootstrap_servers.strip():
        raise ConfigError("kafka.bootstrap_servers: empty; give host:port[,host:port...]")
    _topic(k.input_topic, "kafka.input_topic")
    if k.input_topic in spec.topics:
        raise ConfigError(f"kafka.input_topic: {k.input_topic!r} is also an output topic")
    if not k.group_id:
        raise ConfigError("kafka.group_id: empty")
    client_id = k.client_id or socket.gethostname()
    for table, props in (("consumer", k.consumer), ("producer", k.producer), ("common", k.common)):
        for name in props:
            if name in _RUNTIME_OWNED:
                raise ConfigError(f"kafka.{table}.{name}: set by sessionizer itself ({_RUNTIME_OWNED[name]})")
            if name in _SECRET_PROPERTIES:
                raise ConfigError(f"kafka.{table}.{name}: a secret cannot be written in the config; "
                                  "use kafka.platform with [kafka.auth] <name>_env or <name>_file")
    try:
        platform = platform_settings(k.platform, k.auth)
    except PlatformError as error:
        raise ConfigError(str(error)) from None
    if r.batch_size < 1:
        raise ConfigError(f"runtime.batch_size: {r.batch_size} is less than 1")
    if r.log_format not in ("text", "json"):
        raise ConfigError(f"runtime.log_format: {r.log_format!r} is neither \"text\" nor \"json\"")
    if r.log_level not in LOG_LEVELS:
        raise ConfigError(f"runtime.log_level: {r.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    commit_interval = parse_duration(r.commit_interval, "runtime.commit_interval")
    if commit_interval <= 0:
        raise ConfigError("runtime.commit_interval: must be more than 0")
    return RunSettings(
        spec=spec,
        bootstrap_servers=k.bootstrap_servers,
        input_topic=k.input_topic,
        group_id=k.group_id,
        client_id=client_id,
        transactional_id=k.transactional_id or f"{k.group_id}-{client_id}",
        consumer=dict(k.consumer),
        producer=dict(k.producer),
        common=dict(k.common),
        idle_timeout_ms=_optional_duration(r.idle_timeout, "runtime.idle_timeout"),
        commit_interval_ms=commit_interval,
        batch_size=r.batch_size,
        status_interval_ms=_optional_duration(r.status_interval, "runtime.status_interval"),
        log_format=r.log_format,
        log_level=r.log_level,
        platform=platform,
        metrics=build_metrics_settings(config.metrics),
        config=config,
    )


def build_metrics_settings(table: MetricsTable) -> MetricsSettings | None:
    if table.port is None:
        return None
    if not 0 <= table.port <= 65535:
        raise ConfigError(f"metrics.port: {table.port} is not a TCP port (0-65535)")
    if not table.host.strip():
        raise ConfigError("metrics.host: empty; give an address to listen on, like \"127.0.0.1\" or \"0.0.0.0\"")
    stuck_after = parse_duration(table.stuck_after, "metrics.stuck_after")
    if stuck_after <= 0:
        raise ConfigError("metrics.stuck_after: must be more than 0")
    return MetricsSettings(table.host, table.port, stuck_after / 1000)


# librdkafka settings the exactly-once runtime depends on: not to be overridden.
_RUNTIME_OWNED = {
    "enable.auto.commit": "offsets are committed inside each transaction",
    "isolation.level": "read_committed, so aborted records are never read",
    "transactional.id": "use kafka.transactional_id",
    "group.id": "use kafka.group_id",
    "enable.idempotence": "transactions need it",
    "enable.partition.eof": "idle partitions are detected with it",
}


_SECRET_PROPERTIES = {"sasl.password", "sasl.oauthbearer.client.secret", "ssl.key.password",
                      "ssl.keystore.password", "ssl.key.pem", "sasl.jaas.config"}


def _optional_duration(value: Any, key: str) -> int | None:
    if value == "off":
        return None
    return parse_duration(value, key)


def read_config_file(path: str | Path) -> ConfigFile:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> ConfigFile:
    try:
        return msgspec.convert(raw, ConfigFile)
    except msgspec.ValidationError as error:
        raise ConfigError(_explain(str(error))) from None


def build_spec(config: ConfigFile, *, live: bool = False) -> JobSpec:
    inp = config.input
    for name in ("key", "time", "stake", "win", "game_code", "channel"):
        _check_path(getattr(inp, name), f"input.{name}", allow_kafka_time=(name == "time"))
    if inp.time == KAFKA_TIMESTAMP and not live:
        raise ConfigError("input.time: \"@timestamp\" (the Kafka record timestamp) exists only in live mode "
                          "(`sessionizer run`); replay needs a field path")
    _check_path(inp.event, "input.event")
    if inp.id is not None:
        _check_path(inp.id, "input.id")
    types = tuple(_type_fields(name, table, inp) for name, table in inp.types.items())
    fields = InputFields(inp.key, inp.time, inp.stake, inp.win, inp.game_code, inp.channel, frozenset(inp.events),
                         inp.event, inp.id, types)
    all_count = all(t.counts for t in types)

    sessions = None
    if config.sessions is not None:
        s = config.sessions
        if s.timestamp not in ("start", "end"):
            raise ConfigError(f"sessions.timestamp: {s.timestamp!r} is neither \"start\" nor \"end\"")
        if s.max_events is not None and s.max_events < 1:
            raise ConfigError(f"sessions.max_events: {s.max_events} is less than 1")
        rules = SessionRules(
            gap=parse_duration(s.gap, "sessions.gap"),
            grace=parse_duration(s.grace, "sessions.grace"),
            max_duration=None if s.max_duration is None else parse_duration(s.max_duration, "sessions.max_duration"),
            max_events=s.max_events,
            all_count=all_count,
        )
        sessions = SessionOutput(_topic(s.topic, "sessions.topic"), rules, s.event_name, s.timestamp == "end",
                                 _aggregates(s.aggregates, "sessions.aggregates", _SESSION_KEYS, inp))

    rolling = []
    for index, r in enumerate(config.rolling):
        where = f"rolling[{index}]"
        size = parse_duration(r.size, f"{where}.size")
        advance = size if r.advance is None else parse_duration(r.advance, f"{where}.advance")
        if size <= 0:
            raise ConfigError(f"{where}.size: must be more than 0")
        if advance <= 0:
            raise ConfigError(f"{where}.advance: must be more than 0")
        if size % advance:
            raise ConfigError(f"{where}.size: {r.size!r} is not a multiple of {where}.advance {r.advance!r}")
        if r.group_by is not None:
            _check_path(r.group_by, f"{where}.group_by")
        if r.topic == "sessions":
            raise ConfigError(f"{where}.topic: 'sessions' names the sessions aggregation in dead letters; "
                              "pick another topic")
        rules = WindowRules(size, advance, parse_duration(r.grace, f"{where}.grace"))
        rolling.append(RollingOutput(_topic(r.topic, f"{where}.topic"), rules, r.event_name, r.group_by,
                                     _aggregates(r.aggregates, f"{where}.aggregates", _WINDOW_KEYS, inp)))

    if sessions is None and not rolling:
        raise ConfigError("sessions: nothing to compute: add a [sessions] table or a [[rolling]] table")

    dead_letter_topic = _topic(config.dead_letter.topic, "dead_letter.topic")
    used: dict[str, str] = {}
    named = ([("sessions.topic", sessions.topic)] if sessions else []) + [
        (f"rolling[{i}].topic", r.topic) for i, r in enumerate(rolling)] + [("dead_letter.topic", dead_letter_topic)]
    for key, topic in named:
        if topic in used:
            raise ConfigError(f"{key}: topic {topic!r} is already used by {used[topic]}; each output needs its own")
        used[topic] = key
    return JobSpec(fields, sessions, tuple(rolling), dead_letter_topic)


_SESSION_KEYS = frozenset({"session_start_ms", "session_end_ms", "duration_ms", "event_count", "stake_total",
                           "win_total", "net_total", "game_code", "channel", "close_reason"})
_WINDOW_KEYS = frozenset({"window_start_ms", "window_end_ms", "event_count", "stake_total", "win_total", "net_total"})


def _type_fields(name: str, table: Any, inp: InputTable) -> TypeFields:
    """One `[input.types.<name>]` table, checked, with what it leaves out taken from `[input]`."""
    where = f"input.types.{name}"
    if type(table) is not dict:
        raise ConfigError(f"{where}: expected a table, got {_TOML_TYPE.get(type(table).__name__, 'a value')}")
    try:
        t = msgspec.convert(table, TypeTable)
    except msgspec.ValidationError as error:
        message = _explain(str(error))
        raise ConfigError(f"{where}.{message}" if not message.startswith("config:") else f"{where}{message[6:]}") \
            from None
    if inp.events and name not in inp.events:
        raise ConfigError(f"{where}: type {name!r} is not in input.events {inp.events!r}, so no record of it is "
                          "ever read; add it there or remove the table")
    paths = {}
    for field in ("stake", "win", "game_code", "channel"):
        path = getattr(t, field)
        if path is None:
            path = getattr(inp, field)
        elif path != "":  # "": records of this type have none
            _check_path(path, f"{where}.{field}")
        paths[field] = path
    return TypeFields(name, **paths, counts=t.counts, negate=t.negate)


def _aggregates(tables: list[AggregateTable], where: str, builtin: frozenset[str],
                inp: InputTable) -> tuple[AggregateSpec, ...]:
    specs: list[AggregateSpec] = []
    for index, a in enumerate(tables):
        at = f"{where}[{index}]"
        if not a.name:
            raise ConfigError(f"{at}.name: empty; it is the key the aggregate gets in the output value")
        if a.name in builtin:
            raise ConfigError(f"{at}.name: {a.name!r} is already a key of the output value; pick another name")
        if any(spec.name == a.name for spec in specs):
            raise ConfigError(f"{at}.name: {a.name!r} is already the name of another aggregate here")
        if a.kind not in AGGREGATE_KINDS:
            raise ConfigError(f"{at}.kind: {a.kind!r} is not one of {', '.join(AGGREGATE_KINDS)}")
        if a.kind == COUNT:
            if a.field is not None:
                raise ConfigError(f"{at}.field: a count aggregate counts records and reads no field; remove it")
        elif a.field is None:
            raise ConfigError(f"{at}.field: required for a {a.kind} aggregate (the path of the value it reads)")
        else:
            _check_path(a.field, f"{at}.field")
        if a.types is not None:
            if not a.types:
                raise ConfigError(f"{at}.types: empty, so no record would feed it; leave it out for every type")
            for type_name in a.types:
                if inp.events and type_name not in inp.events:
                    raise ConfigError(f"{at}.types: {type_name!r} is not in input.events {inp.events!r}")
        specs.append(AggregateSpec(a.name, a.kind, a.field, None if a.types is None else frozenset(a.types)))
    return tuple(specs)


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic(name: str, key: str) -> str:
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{key}: {name!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
    return name


def _check_path(path: str, key: str, allow_kafka_time: bool = False) -> None:
    if allow_kafka_time and path == KAFKA_TIMESTAMP:
        return
    if not path or any(not part for part in path.split(".")):
        raise ConfigError(f"{key}: {path!r} is not a field path (dot-separated names, like \"value.stake\")")


_AT = re.compile(r"^(.*?)(?: - at `\$\.?(.*)`)?$", re.S)


def _explain(message: str) -> str:
    """msgspec's 'Expected `int`, got `str` - at `$.sessions.max_events`' -> 'sessions.max_events: ...'."""
    text, where = _AT.match(message).groups()
    unknown = re.match(r"Object contains unknown field `(.*)`", text)
    if unknown:
        key = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        return f"{key}: unknown key"
    missing = re.match(r"Object missing required field `(.*)`", text)
    if missing:
        key = f"{where}.{missing.group(1)}" if where else missing.group(1)
        return f"{key}: required key is missing"
    wrong_type = re.match(r"Expected `(.*)`, got `(.*)`", text)
    if wrong_type:
        wanted = [_TOML_TYPE.get(t, t) for t in wrong_type.group(1).split(" | ") if t != "null"]
        got = _TOML_TYPE.get(wrong_type.group(2), wrong_type.group(2))
        return f"{where or 'config'}: expected {' or '.join(wanted)}, got {got}"
    return f"{where or 'config'}: {text[0].lower() + text[1:] if text else text}"


_TOML_TYPE = {"str": "a string", "int": "an integer", "float": "a float", "bool": "a boolean",
              "array": "an array", "object": "a table", "datetime": "a date-time", "date": "a date",
              "time": "a time"}
