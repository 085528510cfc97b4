"""The forward targets' logic, without a network: ids, batching, retries, Retry-After, OAuth."""

import uuid

import httpx
import orjson
import pytest

from sessionizer.forward.settings import ForwardSettings
from sessionizer.forward.targets import Backoff, HttpTarget, Item, _retry_after, event_id
from sessionizer.platforms import Secret


def item(n: int, topic: str = "xp-session-events", user: str = "u") -> Item:
    record = {"event": "session", "user_id": f"{user}{n}", "timestamp": "2026-01-01 00:00:00",
              "value": {"session_start_ms": n, "stake_total": 1}, "user_attributes": {}}
    return Item(topic, 0, n, f"{user}{n}", orjson.dumps(record), record, event_id(topic, f"{user}{n}", record))


def settings(**overrides) -> ForwardSettings:
    base = dict(source=None, kind="http", topics=["t"], group_id="g", url="https://xp/api/external/hit/event",
                app_token=Secret("tok", "env"), max_batch=3, max_batch_bytes=100_000, timeout_s=1,
                max_retry_delay_s=8)
    return ForwardSettings(**{**base, **overrides})


class Recorder:
    """An httpx transport answering from a script, recording requests."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, tuple):
            return httpx.Response(answer[0], headers=answer[1], content=answer[2] if len(answer) > 2 else b"")
        return httpx.Response(answer, content=b'{"success":true}')


def target(answers, **overrides):
    recorder = Recorder(answers)
    waits = []
    backoff = Backoff(8, sleep=waits.append, rand=lambda: 1.0)
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    return HttpTarget(settings(**overrides), lambda: False, client=client, backoff=backoff), recorder, waits


def test_event_ids_are_deterministic_per_topic_key_and_window_start():
    a, b = item(1), item(1)
    assert a.event_id == b.event_id and isinstance(a.event_id, uuid.UUID)
    assert item(1, topic="other").event_id != a.event_id
    assert item(2).event_id != a.event_id
    window = {"value": {"window_start_ms": 120000}}
    assert event_id("r", "g", window) == event_id("r", "g", window)


def test_batches_hold_at_most_max_batch_events_and_carry_the_app_token_and_event_ids():
    http, recorder, _ = target([200, 200, 200])
    assert http.deliver([item(n) for n in range(7)]) == []
    bodies = [orjson.loads(r.content) for r in recorder.requests]
    assert [len(b["events"]) for b in bodies] == [3, 3, 1]
    assert all(b["apptoken"] == "tok" for b in bodies)
    first = bodies[0]["events"][0]
    assert first["value"]["event_id"] == str(item(0).event_id)
    assert first["value"]["stake_total"] == 1 and first["user_id"] == "u0"


def test_batches_respect_the_byte_cap():
    http, recorder, _ = target([200] * 10, max_batch=1000, max_batch_bytes=1024)
    http.deliver([item(n) for n in range(20)])
    assert len(recorder.requests) > 1
    assert all(len(r.content) <= 1024 + 100 for r in recorder.requests)


def test_429_and_5xx_and_network_errors_are_retried_with_backoff_honouring_retry_after():
    http, recorder, waits = target([(429, {"Retry-After": "3"}), 503, httpx.ConnectError("refused"),
                                    httpx.ReadTimeout("slow"), 200])
    assert http.deliver([item(1)]) == []
    assert len(recorder.requests) == 5
    assert waits[0] == 3  # Retry-After wins
    assert waits[1:] == [1.0, 2.0, 4.0]  # 0.5 * 2^attempt, full jitter at its top here


def test_backoff_is_capped():
    assert Backoff(8, rand=lambda: 1.0).delay(20) == 8
    assert Backoff(8).delay(0, retry_after=120) == 8


def test_a_4xx_rejects_the_batch_with_the_response_body():
    http, _, _ = target([(400, {}, b'{"message":"unknown event"}')])
    rejected = http.deliver([item(1), item(2)])
    assert [r.item.offset for r in rejected] == [1, 2]
    assert rejected[0].reason == 'HTTP 400: {"message":"unknown event"}'


def test_retry_after_as_seconds_or_http_date():
    assert _retry_after("2") == 2.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 0  # a date in the past: retry now
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < _retry_after(soon) <= 30


def test_oauth_client_credentials_token_is_fetched_and_refreshed_on_401():
    token_answers = iter(["t1", "t2"])

    def transport(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            assert b"grant_type=client_credentials" in request.content
            return httpx.Response(200, json={"access_token": next(token_answers), "expires_in": 3600})
        seen.append(request.headers["Authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200)

    seen = []
    http = HttpTarget(settings(app_token=None, oauth_token_url="https://idp/token", client_id=Secret("id", "e"),
                               client_secret=Secret("s", "e")), lambda: False,
                      client=httpx.Client(transport=httpx.MockTransport(transport)),
                      backoff=Backoff(1, sleep=lambda s: None))
    assert http.deliver([item(1)]) == []
    assert seen == ["Bearer t1", "Bearer t2"]


def test_a_stop_request_leaves_the_batch_undelivered():
    from sessionizer.forward.targets import Stopped

    http = HttpTarget(settings(), lambda: True, client=httpx.Client(transport=httpx.MockTransport(Recorder([200]))))
    with pytest.raises(Stopped):
        http.deliver([item(1)])


# -- committing what was delivered, while brokers restart ---------------------------------------

class CommitScript:
    """Stands in for the consumer's commit: raises the scripted errors, then records what is committed."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.committed = []

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        if self.errors:
            from confluent_kafka import KafkaException
            raise KafkaException(self.errors.pop(0))
        self.committed.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))


def forwarder(tmp_path, monkeypatch, consumer):
    from sessionizer.forward.runner import Forwarder
    from sessionizer.forward.settings import load_forward_settings

    monkeypatch.setenv("XP", "token")
    path = tmp_path / "f.toml"
    path.write_text('[sessions]\n[kafka]\nbootstrap_servers = "127.0.0.1:9"\n'
                    '[xtremepush]\nkind = "http"\napp_token_env = "XP"\n')
    forward = Forwarder(load_forward_settings(path))
    forward.consumer.close()
    forward.consumer = consumer
    return forward


def test_a_commit_a_broker_restart_refuses_is_kept_and_made_with_the_next_one(tmp_path, monkeypatch, caplog):
    """librdkafka's synchronous commit fails with NOT_COORDINATOR or a transport error while the
    group coordinator moves; that once stopped `sessionizer forward` (exit 1) mid rolling restart."""
    from confluent_kafka import KafkaError, TopicPartition

    script = CommitScript(KafkaError(KafkaError.NOT_COORDINATOR), KafkaError(KafkaError._TRANSPORT))
    forward = forwarder(tmp_path, monkeypatch, script)
    forward._commit([item(4), item(7, topic="r")])
    forward._commit([item(9)])
    assert script.committed == [] and forward.uncommitted == {("xp-session-events", 0): 10, ("r", 0): 8}
    forward._commit_uncommitted()  # the loop's next turn
    assert script.committed == [[("r", 0, 8), ("xp-session-events", 0, 10)]] and forward.uncommitted == {}
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == ["cannot commit offsets yet: retrying"]
    forward._commit([item(11)])
    assert script.committed[-1] == [("xp-session-events", 0, 12)]

    script.errors.append(KafkaError(KafkaError.REQUEST_TIMED_OUT))
    forward._commit([item(12), item(3, topic="r")])
    script.errors.append(KafkaError(KafkaError.REQUEST_TIMED_OUT))  # the revoke's own try fails too
    forward._on_revoke(None, [TopicPartition("r", 0)])  # its next owner reads it again from offset 8
    assert forward.uncommitted == {("xp-session-events", 0): 13}


def test_a_fatal_commit_error_stops_the_forward(tmp_path, monkeypatch):
    from confluent_kafka import KafkaError, KafkaException

    forward = forwarder(tmp_path, monkeypatch, CommitScript(KafkaError(KafkaError._FENCED, fatal=True)))
    with pytest.raises(KafkaException):
        forward._commit([item(1)])
