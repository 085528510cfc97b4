"""Helpers for the tests on the real broker: topics, producing, running `sessionizer run`, reading back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
SESSIONIZER = Path(sys.executable).parent / "sessionizer"
BASE_TOPICS = ["xp-session-events", "xp-rolling-2min", "xp-rolling-5min-game", "xp-dead-letter"]


def create_topic(bootstrap: str, name: str, partitions: int, replication: int = 1,
                 leaders: list[int] | None = None) -> None:
    """`leaders`: on a cluster, the node to lead each partition (its replicas: that node, then the others)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if leaders:
        nodes = sorted(set(leaders) | set(range(1, replication + 1)))
        assignment = [[leader, *[n for n in nodes if n != leader][:replication - 1]] for leader in leaders]
        topic = NewTopic(name, len(assignment), replica_assignment=assignment)
    else:
        topic = NewTopic(name, partitions, replication)
    for future in admin.create_topics([topic]).values():
        future.result()


def partition_of(line: bytes, partitions: int, fallback: int, key_field: str = "user_id") -> int:
    """Keyed records by a stable hash of their key (one player, one partition); others round robin."""
    try:
        key = orjson.loads(line).get(key_field)
    except (orjson.JSONDecodeError, AttributeError):
        key = None
    if key is None or isinstance(key, (dict, list)):
        return fallback % partitions
    return zlib.crc32(str(key).encode()) % partitions


def produce(bootstrap: str, topic: str, lines: list[bytes | None], partitions: int,
            chosen: list[int] | None = None) -> list[list[bytes | None]]:
    """Produce in order (idempotent, so each partition keeps that order); returns each partition's records."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10,
                         "message.max.bytes": 4_000_000})
    per_partition: list[list[bytes | None]] = [[] for _ in range(partitions)]
    for index, line in enumerate(lines):
        partition = chosen[index] if chosen else partition_of(line or b"", partitions, index)
        while True:
            try:
                producer.produce(topic, line, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
        per_partition[partition].append(line)
    assert producer.flush(60) == 0
    return per_partition


class Job:
    """One test's job on the shared broker: its own input topic, group and output topic names."""

    def __init__(self, bootstrap: str, name: str, partitions: int, tmp: Path,
                 base: Path = ROOT / "examples" / "xtremepush.toml", replication: int = 1,
                 leaders: list[int] | None = None) -> None:
        self.bootstrap, self.name, self.partitions, self.tmp = bootstrap, name, partitions, tmp
        self.input_topic = f"{name}-events"
        self.group = f"{name}-group"
        self.base = base.read_text()
        for topic in BASE_TOPICS:
            self.base = self.base.replace(f'"{topic}"', f'"{name}-{topic}"')
        if 'topic = "' + name + '-xp-dead-letter"' not in self.base:
            self.base += f'\n[dead_letter]\ntopic = "{name}-xp-dead-letter"\n'
        self.outputs = {topic: f"{name}-{topic}" for topic in BASE_TOPICS if f'"{name}-{topic}"' in self.base}
        create_topic(bootstrap, self.input_topic, partitions, replication, leaders)

    def replay_config(self) -> Path:
        path = self.tmp / f"{self.name}-replay.toml"
        path.write_text(self.base)
        return path

    def config(self, client: str, consumer: str = "", runtime: str = "") -> Path:
        path = self.tmp / f"{self.name}-{client}.toml"
        path.write_text(self.base + f"""
[kafka]
bootstrap_servers = "{self.bootstrap}"
input_topic = "{self.input_topic}"
group_id = "{self.group}"
client_id = "{client}"

[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000
{consumer}
[runtime]
status_interval = "2s"
{runtime}
""")
        return path

    def start(self, client: str, **kwargs: str) -> "Run":
        return Run(self.config(client, **kwargs), self.tmp / f"{self.name}-{client}.log")

    def produce(self, lines: list[bytes | None], chosen: list[int] | None = None) -> list[list[bytes | None]]:
        return produce(self.bootstrap, self.input_topic, lines, self.partitions, chosen)

    def wait_until_consumed(self, timeout: float, runs: list["Run"] = ()) -> None:
        wait_until_consumed(self.bootstrap, self.group, self.input_topic, self.partitions, timeout, runs)

    def live(self) -> dict[str, list[dict]]:
        merged: dict[str, list[dict]] = {}
        for base, topic in self.outputs.items():
            records = [orjson.loads(value) for _, value in read_committed(self.bootstrap, topic)]
            if base == "xp-dead-letter":
                for record in records:
                    assert record["source"]["topic"] == self.input_topic
                    record["source"] = {"partition": record["source"]["partition"],
                                        "offset": record["source"]["offset"]}
            merged[base] = records
        return merged

    def replay(self, per_partition: list[list[bytes | None]]) -> dict[str, list[dict]]:
        """`sessionizer replay` of each partition's records (one file per partition), outputs merged."""
        merged: dict[str, list[dict]] = {topic: [] for topic in self.outputs}
        config = self.replay_config()
        for partition, lines in enumerate(per_partition):
            data = self.tmp / f"{self.name}-partition-{partition}.jsonl"
            data.write_bytes(b"".join((line or b"") + b"\n" for line in lines))
            out = self.tmp / f"{self.name}-replay-{partition}"
            done = subprocess.run([str(SESSIONIZER), "replay", "--no-progress", "--config", str(config),
                                   "--output-dir", str(out), str(data)], capture_output=True, timeout=600)
            assert done.returncode == 0, done.stderr.decode()
            for base, topic in self.outputs.items():
                for raw in (out / f"{topic}.jsonl").read_bytes().splitlines():
                    record = orjson.loads(raw)
                    if base == "xp-dead-letter":
                        # The same record, named by where it was on Kafka: line n is offset n - 1.
                        record["source"] = {"partition": partition, "offset": record["source"]["line"] - 1}
                    merged[base].append(record)
        return merged


class Run:
    """One `sessionizer run` process (every one started is killed at the end of its test)."""

    started: list["Run"] = []

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        Run.started.append(self)
        self.log_path = log
        self.log = open(log, "ab")
        self.process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)],
                                        stdout=self.log, stderr=self.log, env=env)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kit-inspect"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in metadata.partitions}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets; {} while the coordinator cannot say (loading, rebalancing)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in
                consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)}
    except KafkaException:
        return {}
    finally:
        consumer.close()


def wait_until_consumed(bootstrap: str, group: str, topic: str, partitions: int, timeout: float,
                        runs: list[Run] = ()) -> None:
    """Until the group's committed offsets reach the end of every input partition."""
    ends = end_offsets(bootstrap, topic)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = committed_offsets(bootstrap, group, topic, partitions)
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            return
        for run in runs:
            assert run.alive(), f"sessionizer run exited:\n{run.log_text()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"not consumed in {timeout} s: committed {committed}, ends {ends}")


def read_committed(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every committed record of a topic, (key, value), partition by partition in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kit-reader", "isolation.level": "read_committed",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    # (a read_committed consumer's watermark query answers with the last stable offset itself)
    watermarks = Consumer({"bootstrap.servers": bootstrap, "group.id": "kit-reader",
                           "isolation.level": "read_uncommitted"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        by_partition: dict[int, list] = {p: [] for p in partitions}
        # A read_committed consumer's end is the last stable offset: a transaction left open by a
        # killed process (aborted by the broker only after transaction.timeout.ms, 15 s, plus up to
        # 10 s of cleanup interval) hides every record committed after it. So a partition is read
        # once its end has caught up with the high watermark, not at its first end-of-partition.
        pending = set(partitions)
        end_seen: dict[int, int] = {}  # the offset of each partition's latest end-of-partition
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 1.0):
                if not message.error():
                    by_partition[message.partition()].append((message.key(), message.value()))
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    end_seen[message.partition()] = message.offset()
            for p in sorted(pending.intersection(end_seen)):
                position = max(end_seen[p], consumer.position([TopicPartition(topic, p)])[0].offset)
                high = watermarks.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                if position >= high:
                    pending.discard(p)
        assert not pending, f"{topic}: partitions {pending} not read to their high watermark in 90 s"
        return [record for p in partitions for record in by_partition[p]]
    finally:
        consumer.close()
        watermarks.close()


def as_multiset(records: list[dict]) -> Counter:
    return Counter(orjson.dumps(record, option=orjson.OPT_SORT_KEYS) for record in records)


def without_keys(records: list[dict], prefix: str) -> list[dict]:
    return [r for r in records if not str(r.get("user_id", "")).startswith(prefix)]

