"""`make demo`: a local broker, the bundled sample produced into it, `sessionizer run` on it,
and every final record printed as it is committed, including the last sessions that close
on their own after the traffic stops (idle close)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "kafka"))
from broker import Broker, free_port  # noqa: E402

SAMPLE = ROOT / "examples" / "sample-spins.jsonl"
CONFIG = ROOT / "examples" / "demo.toml"
QUIET_SECONDS = 45  # gap 20 s + grace 5 s + idle timeout 3 s, with room to spare


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="sessionizer-demo-"))
    with Broker(work / "broker") as broker:
        print(f"Kafka is up at {broker.bootstrap}", flush=True)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("xtremepush_events", 3, 1)])["xtremepush_events"].result()
        config = work / "demo.toml"
        metrics_port = free_port()
        config.write_text(CONFIG.read_text().replace('"127.0.0.1:9092"', f'"{broker.bootstrap}"')
                          + f"\n[metrics]\nport = {metrics_port}\n")
        log = open(work / "run.log", "wb")
        run = subprocess.Popen([str(Path(sys.executable).parent / "sessionizer"), "run", "--config", str(config)],
                               stdout=log, stderr=log)
        try:
            print(f"status page: http://127.0.0.1:{metrics_port}/  (Prometheus metrics at /metrics, "
                  f"probes at /healthz and /readyz)", flush=True)
            produced = produce(broker.bootstrap)
            print(f"produced {produced:,} records from {SAMPLE.name}; final records as they are committed:\n",
                  flush=True)
            stopped_at = time.monotonic()
            follow(broker.bootstrap, stopped_at)
        finally:
            run.terminate()
            run.wait(60)
        print(f"\nsessionizer run exited with {run.returncode}; its log: {work / 'run.log'}")
    return 0


def produce(bootstrap: str) -> int:
    # Idempotent: retries (a new topic's first requests can fail) never reorder a partition.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    count = 0
    for line in SAMPLE.read_bytes().splitlines():
        try:
            key = orjson.loads(line).get("user_id")
        except (orjson.JSONDecodeError, AttributeError):
            key = None
        producer.produce("xtremepush_events", line, str(key).encode() if key is not None else None)
        count += 1
    producer.flush(30)
    return count


def follow(bootstrap: str, traffic_stopped: float) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-viewer", "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe(["xp-session-events", "xp-rolling-30s", "xp-dead-letter"])
    counts: dict[str, int] = {}
    last_output = time.monotonic()
    try:
        while time.monotonic() - last_output < QUIET_SECONDS:
            for message in consumer.consume(500, 0.5):
                if message.error():
                    continue
                last_output = time.monotonic()
                counts[message.topic()] = counts.get(message.topic(), 0) + 1
                print(f"+{last_output - traffic_stopped:6.1f}s  {describe(message.topic(), orjson.loads(message.value()))}",
                      flush=True)
    finally:
        consumer.close()
    print("\nno new final record for 45 s; records per topic: "
          + ", ".join(f"{topic} {n:,}" for topic, n in sorted(counts.items())))


def describe(topic: str, record: dict) -> str:
    value = record.get("value", {})
    if topic == "xp-session-events":
        return (f"session  {record['user_id']:<10} {record['timestamp']}  {value['event_count']:>3} spins  "
                f"stake {value['stake_total']:>7}  win {value['win_total']:>7}  net {value['net_total']:>8}  "
                f"({value['close_reason']})")
    if topic == "xp-dead-letter":
        return f"dead letter  {record['error']}: {record['detail'][:90]}"
    return (f"rolling  {record['user_id']:<10} {record['timestamp']}  {value['event_count']:>3} spins  "
            f"net {value['net_total']:>8}")


if __name__ == "__main__":
    sys.exit(main())
