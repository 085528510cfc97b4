"""`sessionizer forward` to both Xtremepush targets, with faults and kill -9: every final record is
delivered at least once, each with its event id, and the de-duplicated deliveries equal the outputs."""

import os
import random
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from authkit import SCRAM_USERS
from kit import SESSIONIZER, create_topic, read_committed
from sessionizer.forward.targets import event_id

SOURCE_TOPICS = {"sessions": "fw-sessions", "rolling": "fw-rolling"}


def final_records(count: int, reject_every: int = 0) -> dict[str, list[tuple[bytes, bytes]]]:
    """Envelope records as sessionizer run writes them, (key, value) per output topic."""
    sessions, rolling = [], []
    for n in range(count):
        user = "reject-me" if reject_every and n % reject_every == 0 else f"u{n:05d}"
        sessions.append((user.encode(), orjson.dumps({
            "event": "session", "user_id": user, "timestamp": "2026-11-02 18:00:00",
            "value": {"session_start_ms": 1_800_000_000_000 + n, "session_end_ms": 1_800_000_000_000 + n,
                      "duration_ms": 0, "event_count": 1, "stake_total": 1, "win_total": 0, "net_total": -1,
                      "game_code": None, "channel": None, "close_reason": "inactivity"}, "user_attributes": {}})))
        rolling.append((user.encode(), orjson.dumps({
            "event": "session_summary", "user_id": user, "timestamp": "2026-11-02 18:00:00",
            "value": {"window_start_ms": 1_800_000_000_000 + n * 120_000, "window_end_ms": 0, "event_count": 1,
                      "stake_total": 1, "win_total": 0, "net_total": -1}, "user_attributes": {}})))
    return {SOURCE_TOPICS["sessions"]: sessions, SOURCE_TOPICS["rolling"]: rolling}


def publish(bootstrap: str, prefix: str, records: dict) -> dict[str, list[tuple[bytes, bytes]]]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    named = {}
    for topic, pairs in records.items():
        name = f"{prefix}-{topic}"
        create_topic(bootstrap, name, 2)
        for key, value in pairs:
            producer.produce(name, value, key)
        named[name] = pairs
    producer.flush(30)
    return named


def forward_config(tmp: Path, bootstrap: str, prefix: str, xtremepush: str) -> Path:
    path = tmp / f"{prefix}.toml"
    path.write_text(f"""
[sessions]
topic = "{prefix}-{SOURCE_TOPICS['sessions']}"

[[rolling]]
topic = "{prefix}-{SOURCE_TOPICS['rolling']}"
size = "2m"

[dead_letter]
topic = "{prefix}-dead-letter"

[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{prefix}"
client_id = "{prefix}"

[kafka.consumer]
"session.timeout.ms" = 6000   # a killed process's partitions move on within seconds
"heartbeat.interval.ms" = 1000

[xtremepush]
{xtremepush}
""")
    return path


def end_of(bootstrap: str, topics: list[str]) -> dict:
    from kit import end_offsets

    return {(t, p): end for t in topics for p, end in end_offsets(bootstrap, t).items()}


def wait_forwarded(bootstrap: str, group: str, topics: list[str], process, timeout: float = 180,
                   log: Path | None = None) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    ends = end_of(bootstrap, topics)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                committed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
            except KafkaException:  # the coordinator is busy (loading, rebalancing): ask again
                committed = []
            if committed and all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in committed):
                return
            assert process.poll() is None, f"forward exited: {log.read_text()[-4000:] if log else ''}"
            time.sleep(0.3)
    finally:
        consumer.close()
    raise AssertionError("not all records forwarded in time")


def start_forward(config: Path, log: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen([str(SESSIONIZER), "forward", "--config", str(config)], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def kill_and_restart(process, config: Path, log: Path, times: int, env=None, seed: int = 3) -> subprocess.Popen:
    rng = random.Random(seed)
    for _ in range(times):
        time.sleep(rng.uniform(1.0, 3.0))
        process.kill()
        process.wait()
        process = start_forward(config, log, env)
    return process


def stop_when_started(process: subprocess.Popen, log: Path, starts: int) -> int:
    """SIGTERM once the last incarnation is forwarding (one still importing has no handler yet)."""
    deadline = time.monotonic() + 60
    while log.read_text().count("msg=forwarding") < starts and time.monotonic() < deadline:
        time.sleep(0.2)
    process.terminate()
    return process.wait(60)


def expected_ids(named: dict) -> dict[str, bytes]:
    return {str(event_id(topic, key.decode(), orjson.loads(value))): value
            for topic, pairs in named.items() for key, value in pairs}


# -- Kafka target: Xtremepush's events topic over SCRAM-SHA-512 -----------------------------------

def test_forward_to_xtremepush_kafka_through_scram_survives_kill_9(auth_broker, tmp_path):
    named = publish(auth_broker.plaintext, "fk", final_records(3000))
    create_topic(auth_broker.plaintext, "fk-xp-events", 3)
    user, password = next(iter(SCRAM_USERS.items()))
    config = forward_config(tmp_path, auth_broker.plaintext, "fk", f"""
kind = "kafka"
bootstrap_servers = "{auth_broker.address('SASL_SCRAM')}"
topic = "fk-xp-events"
username_env = "XP_USER"
password_env = "XP_PASSWORD"
ca = "{auth_broker.pki.ca}"
max_batch = 200
""")
    env = {"XP_USER": user, "XP_PASSWORD": password}
    log = tmp_path / "forward.log"
    process = start_forward(config, log, env)
    process = kill_and_restart(process, config, log, times=4, env=env)
    wait_forwarded(auth_broker.plaintext, "fk-forward", list(named), process)
    assert stop_when_started(process, log, starts=5) == 0, log.read_text()[-3000:]
    delivered = read_committed(auth_broker.plaintext, "fk-xp-events")
    expected = expected_ids(named)
    by_id = {}
    for key, value in delivered:
        by_id.setdefault(key.decode(), value)
    assert set(by_id) == set(expected)  # at least once, nothing else
    assert all(by_id[i] == value for i, value in expected.items())  # the records themselves
    assert len(delivered) >= len(expected)
    assert "password" not in log.read_text().lower().replace("password_env", "")


# -- HTTP target: the hit/event API, with faults -------------------------------------------------

class FlakyXtremepush:
    """A hit/event endpoint: 200s, 429s with Retry-After, 500s, slow replies, dropped connections
    (unless `faults` is off), and a 400 for any batch holding a record of user "reject-me"."""

    def __init__(self, faults: bool = True) -> None:
        self.requests = 0
        self.delivered: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.requests += 1
                    n = outer.requests
                payload = orjson.loads(body)
                assert payload["apptoken"] == "xp-app-token"
                assert len(payload["events"]) <= 100
                fault = n % 7 if faults else 0
                if any(e["user_id"] == "reject-me" for e in payload["events"]):
                    return self._reply(400, b'{"success":false,"message":"bad event: reject-me"}')
                if fault == 1:
                    return self._reply(429, b"slow down", {"Retry-After": "1"})
                if fault == 2:
                    return self._reply(500, b"oops")
                if fault == 3:
                    time.sleep(2.5)  # longer than the client's timeout
                    return self._reply(200, b'{"success":true}')
                if fault == 4:
                    self.connection.shutdown(socket.SHUT_RDWR)  # a dropped connection, no reply
                    return
                with outer.lock:
                    outer.delivered.extend(payload["events"])
                return self._reply(200, b'{"code":200,"success":true}')

            def _reply(self, status, body, headers=None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/api/external/hit/event"


def test_forward_to_the_http_api_with_faults_and_kill_9(bootstrap, tmp_path):
    named = publish(bootstrap, "fh", final_records(1000, reject_every=499))
    server = FlakyXtremepush()
    config = forward_config(tmp_path, bootstrap, "fh", f"""
kind = "http"
url = "{server.url}"
app_token_env = "XP_TOKEN"
max_batch = 100
timeout = "1s"
max_retry_delay = "2s"
""")
    env = {"XP_TOKEN": "xp-app-token"}
    log = tmp_path / "forward.log"
    process = start_forward(config, log, env)
    process = kill_and_restart(process, config, log, times=3, env=env, seed=4)
    wait_forwarded(bootstrap, "fh-forward", list(named), process, timeout=300)
    assert stop_when_started(process, log, starts=4) == 0, log.read_text()[-3000:]
    server.server.shutdown()

    expected = expected_ids(named)
    delivered = {}
    for event in server.delivered:
        event_id_ = event["value"].pop("event_id")
        delivered.setdefault(event_id_, event)
    letters = [orjson.loads(v) for _, v in read_committed(bootstrap, "fh-dead-letter")]
    rejected = {letter["source"]["event_id"] for letter in letters}
    assert all(letter["error"] == "rejected_by_xtremepush" and "HTTP 400" in letter["detail"]
               and "bad event: reject-me" in letter["detail"] for letter in letters)
    rejected_users = {orjson.loads(expected[i])["user_id"] for i in rejected}
    assert "reject-me" in rejected_users
    assert not any(e["user_id"] == "reject-me" for e in delivered.values())
    # Every final record is delivered (at least once) or dead-lettered with Xtremepush's answer.
    assert set(delivered) | rejected == set(expected)
    assert len(delivered) > len(expected) / 2  # most batches hold no reject-me record
    for i, event in delivered.items():
        assert event == orjson.loads(expected[i])
    text = log.read_text()
    assert "retrying" in text and "HTTP 429" in text and "HTTP 500" in text
    assert "xp-app-token" not in text
