"""Where forwarded records go: Xtremepush's Kafka events topic, or its HTTP hit/event API.

A target's `deliver(items)` returns only when every item is either delivered
(acknowledged by Xtremepush) or rejected for good (returned, with the reason, for
the dead-letter topic). Transient failures are retried with exponential backoff
and jitter, so the caller may commit the source offsets once `deliver` returns.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from .settings import ForwardSettings

log = logging.getLogger("sessionizer.forward")

# uuid5 namespace of sessionizer's event ids: one window of one topic, one id, on every delivery.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1f8e-3b0e-5a52-9c1d-8e7d2f4a9b10")


def event_id(topic: str, key: str | None, record: dict) -> uuid.UUID:
    """Deterministic id of a final record: its output topic, key, and window (or session) start."""
    value = record.get("value") if isinstance(record, dict) else None
    value = value if isinstance(value, dict) else {}
    start = value.get("session_start_ms", value.get("window_start_ms"))
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{topic}\n{key}\n{start}")


@dataclass
class Item:
    """One committed final record to deliver."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    record: dict
    event_id: uuid.UUID


@dataclass
class Rejection:
    item: Item
    reason: str


class Backoff:
    """Exponential backoff with full jitter, capped; `Retry-After` wins when the server gives one."""

    def __init__(self, cap_s: float, base_s: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self.cap_s, self.base_s, self.sleep, self.rand = cap_s, base_s, sleep, rand
        self.on_retry: Callable[[float], None] = lambda delay: None  # told of each retry (metrics, health)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap_s)
        return min(self.cap_s, self.base_s * 2 ** min(attempt, 30)) * self.rand()

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        delay = self.delay(attempt, retry_after)
        self.on_retry(delay)
        self.sleep(delay)
        return delay


class Stopped(Exception):
    """The process is stopping: the current batch is left undelivered (and uncommitted)."""


class KafkaTarget:
    """Xtremepush's events topic, over SCRAM-SHA-512 and TLS, keyed by the event id."""

    def __init__(self, settings: ForwardSettings, stopping: Callable[[], bool]) -> None:
        from confluent_kafka import Producer

        self.topic = settings.target_topic
        self.stopping = stopping
        self.backoff = Backoff(settings.max_retry_delay_s)
        self.producer = Producer({
            **settings.target_properties, "client.id": f"{settings.source.client_id}-forward",
            "enable.idempotence": True, "linger.ms": 20, "logger": logging.getLogger("sessionizer.librdkafka"),
        })

    def deliver(self, items: list[Item]) -> list[Rejection]:
        from confluent_kafka import KafkaError

        pending, rejected, attempt = list(items), [], 0
        while pending:
            outcome: dict[int, Any] = {}
            for index, item in enumerate(pending):
                def report(error: Any, _message: Any, index: int = index) -> None:
                    outcome[index] = error
                while True:
                    try:
                        self.producer.produce(self.topic, item.value, str(item.event_id).encode(), on_delivery=report)
                        break
                    except BufferError:
                        self.producer.poll(0.1)
            self.producer.flush(60)
            retry = []
            for index, item in enumerate(pending):
                error = outcome.get(index, "not acknowledged in time")
                if error is None:
                    continue
                if isinstance(error, KafkaError) and error.code() in (
                        KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.CORRUPT_MESSAGE):
                    rejected.append(Rejection(item, f"Xtremepush Kafka refused it: {error.str()}"))
                elif isinstance(error, KafkaError) and error.fatal():
                    raise RuntimeError(f"xtremepush: the Kafka producer failed for good: {error.str()}")
                else:
                    retry.append(item)
            if retry:
                if self.stopping():
                    raise Stopped()
                reason = outcome.get(0)
                log.warning("delivery to Xtremepush Kafka failed: retrying",
                            extra={"records": len(retry), "error": getattr(reason, "str", lambda: reason)(),
                                   "in_s": round(self.backoff.wait(attempt), 2)})
                attempt += 1
            pending = retry
        return rejected


class HttpTarget:
    """Xtremepush's hit/event API: batches of up to 1000 events (and `max_batch_bytes`)."""

    def __init__(self, settings: ForwardSettings, stopping: Callable[[], bool], client: Any = None,
                 backoff: Backoff | None = None) -> None:
        import httpx

        self.settings = settings
        self.stopping = stopping
        self.client = client or httpx.Client(timeout=settings.timeout_s)
        self.backoff = backoff or Backoff(settings.max_retry_delay_s)
        self._bearer: tuple[str, float] | None = None  # (token, expiry) with OAuth client credentials

    def deliver(self, items: list[Item]) -> list[Rejection]:
        rejected: list[Rejection] = []
        for chunk, events in self._chunks(items):
            rejected += self._send(chunk, events)
        return rejected

    def _chunks(self, items: list[Item]):
        chunk: list[Item] = []
        events: list[bytes] = []
        size = 0
        for item in items:
            event = self._event(item)
            if chunk and (len(chunk) >= self.settings.max_batch or size + len(event) + 1 > self.settings.max_batch_bytes):
                yield chunk, events
                chunk, events, size = [], [], 0
            chunk.append(item)
            events.append(event)
            size += len(event) + 1
        if chunk:
            yield chunk, events

    @staticmethod
    def _event(item: Item) -> bytes:
        """The envelope record, with its event id in `value.event_id` for de-duplication."""
        record = dict(item.record)
        value = dict(record.get("value") or {})
        value["event_id"] = str(item.event_id)
        record["value"] = value
        return orjson.dumps(record)

    def _send(self, chunk: list[Item], events: list[bytes]) -> list[Rejection]:
        import httpx

        attempt = 0
        while True:
            if self.stopping():
                raise Stopped()
            try:
                body, headers = self._request(events)
                response = self.client.post(self.settings.url, content=body, headers=headers)
            except httpx.TransportError as error:  # timeouts, refused or dropped connections
                why, retry_after = f"{type(error).__name__}: {error}", None
            else:
                if 200 <= response.status_code < 300:
                    if attempt:
                        log.info("delivered after retries", extra={"events": len(chunk), "attempts": attempt + 1})
                    return []
                if response.status_code == 401 and self._bearer is not None and attempt == 0:
                    self._bearer = None  # a token revoked early: fetch a new one, once
                    attempt += 1
                    continue
                if response.status_code != 429 and response.status_code < 500:
                    reason = f"HTTP {response.status_code}: {response.text[:2000]}"
                    log.error("Xtremepush rejected a batch: its records go to the dead-letter topic",
                              extra={"events": len(chunk), "status": response.status_code})
                    return [Rejection(item, reason) for item in chunk]
                why, retry_after = f"HTTP {response.status_code}", _retry_after(response.headers.get("Retry-After"))
            delay = self.backoff.wait(attempt, retry_after)
            log.warning("delivery to Xtremepush failed: retrying", extra={
                "events": len(chunk), "error": why, "attempt": attempt + 1, "in_s": round(delay, 2)})
            attempt += 1

    def _request(self, events: list[bytes]) -> tuple[bytes, dict[str, str]]:
        joined = b"[" + b",".join(events) + b"]"
        headers = {"Content-Type": "application/json"}
        if self.settings.app_token is not None:
            return b'{"apptoken":' + orjson.dumps(self.settings.app_token.reveal()) + b',"events":' + joined + b"}", \
                headers
        headers["Authorization"] = f"Bearer {self._oauth_token()}"
        return b'{"events":' + joined + b"}", headers

    def _oauth_token(self) -> str:
        if self._bearer is None or self._bearer[1] - 60 < time.time():
            s = self.settings
            assert s.client_id is not None and s.client_secret is not None and s.oauth_token_url
            form = {"grant_type": "client_credentials", "client_id": s.client_id.reveal(),
                    "client_secret": s.client_secret.reveal()}
            if s.scope:
                form["scope"] = s.scope
            response = self.client.post(s.oauth_token_url, data=form)
            response.raise_for_status()
            payload = response.json()
            self._bearer = (payload["access_token"], time.time() + float(payload.get("expires_in", 300)))
        return self._bearer[0]


def _retry_after(value: str | None) -> float | None:
    """`Retry-After`: seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()
