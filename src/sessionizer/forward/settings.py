"""The `[xtremepush]` table, validated: where `sessionizer forward` delivers, and with which credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunSettings, build_run_settings, build_spec, parse_duration, read_config_file
from ..platforms import PlatformError, Secret, read_secret


@dataclass(frozen=True)
class ForwardSettings:
    source: RunSettings  # the cluster and topics sessionizer run writes to
    kind: str  # "kafka" or "http"
    topics: list[str]
    group_id: str
    # kind = "kafka"
    target_properties: dict[str, Any] = field(repr=False, default_factory=dict)  # secrets inside
    target_topic: str = "events"
    # kind = "http"
    url: str = ""
    app_token: Secret | None = None
    oauth_token_url: str | None = None
    client_id: Secret | None = None
    client_secret: Secret | None = None
    scope: str | None = None
    max_batch: int = 1000
    max_batch_bytes: int = 1_000_000
    timeout_s: float = 10.0
    max_retry_delay_s: float = 60.0


def load_forward_settings(path: str | Path) -> ForwardSettings:
    config = read_config_file(path)
    source = build_run_settings(config, build_spec(config, live=True))
    x = config.xtremepush
    if x is None:
        raise ConfigError("xtremepush: sessionizer forward needs an [xtremepush] table (kind = \"kafka\" or \"http\")")
    spec = source.spec
    produced = ([spec.sessions.topic] if spec.sessions else []) + [r.topic for r in spec.rolling]
    topics = x.topics or produced
    for topic in topics:
        if topic not in produced:
            raise ConfigError(f"xtremepush.topics: {topic!r} is not an output of this config "
                              f"(sessions or rolling: {', '.join(produced)})")
    common = dict(source=source, kind=x.kind, topics=topics, group_id=x.group_id or f"{source.group_id}-forward")
    try:
        if x.kind == "kafka":
            if not x.bootstrap_servers:
                raise ConfigError("xtremepush.bootstrap_servers: the Xtremepush Kafka address (from Xtremepush support)")
            user = read_secret(x, "username", "xtremepush kafka", table="xtremepush")
            password = read_secret(x, "password", "xtremepush kafka", table="xtremepush")
            props = {"bootstrap.servers": x.bootstrap_servers, "security.protocol": "SASL_SSL",
                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user.reveal(),
                     "sasl.password": password.reveal()}
            if x.ca:
                if not Path(x.ca).is_file():
                    raise ConfigError(f"xtremepush.ca: no such file {x.ca}")
                props["ssl.ca.location"] = x.ca
            return ForwardSettings(**common, target_properties=props, target_topic=x.topic)
        if x.kind == "http":
            if x.max_batch < 1 or x.max_batch > 1000:
                raise ConfigError(f"xtremepush.max_batch: {x.max_batch} is outside 1..1000 (the API's limit)")
            if x.max_batch_bytes < 1024:
                raise ConfigError(f"xtremepush.max_batch_bytes: {x.max_batch_bytes} is too small")
            app_token = client_id = client_secret = None
            if x.oauth_token_url:
                client_id = read_secret(x, "client_id", "xtremepush http", table="xtremepush")
                client_secret = read_secret(x, "client_secret", "xtremepush http", table="xtremepush")
            else:
                app_token = read_secret(x, "app_token", "xtremepush http", table="xtremepush")
            return ForwardSettings(
                **common, url=x.url, app_token=app_token, oauth_token_url=x.oauth_token_url, client_id=client_id,
                client_secret=client_secret, scope=x.scope, max_batch=x.max_batch,
                max_batch_bytes=x.max_batch_bytes, timeout_s=parse_duration(x.timeout, "xtremepush.timeout") / 1000,
                max_retry_delay_s=parse_duration(x.max_retry_delay, "xtremepush.max_retry_delay") / 1000)
    except PlatformError as error:
        raise ConfigError(str(error)) from None
    raise ConfigError(f"xtremepush.kind: {x.kind!r} is neither \"kafka\" nor \"http\"")
