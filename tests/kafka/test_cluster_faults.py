"""`sessionizer run` on a 3-node cluster (replication factor 3, min ISR 2) through the faults
managed Kafka brings: rolling restarts, a killed broker that holds the coordinators, a zombie.

Each test produces its stream while the job runs and the fault happens, ends every partition
with a sentinel (see test_run_equals_replay), and compares the read_committed output with
`sessionizer replay` of the same records, partition by partition, record for record. The
recovery times go to .cache/faults.json (the README's "Faults survived" table).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from authkit import SCRAM_USERS
from kit import Job, as_multiset, create_topic, read_committed, without_keys
from test_forward import (FlakyXtremepush, expected_ids, final_records, forward_config, start_forward,
                          stop_when_started, wait_forwarded)
from test_run_equals_replay import SENTINEL, stream, wait_for, with_sentinels

RESULTS = Path(__file__).resolve().parents[2] / ".cache" / "faults.json"


class Producing:
    """The stream produced in chunks from a thread, paced over `seconds`, while a test injects faults."""

    def __init__(self, job: Job, lines: list[bytes], chosen: list[int], seconds: float, chunks: int = 40) -> None:
        self.per_partition: list[list[bytes | None]] = [[] for _ in range(job.partitions)]
        self.error: BaseException | None = None
        step = -(-len(lines) // chunks)

        def produce() -> None:
            try:
                for start in range(0, len(lines), step):
                    for partition, records in enumerate(job.produce(lines[start:start + step],
                                                                    chosen[start:start + step])):
                        self.per_partition[partition].extend(records)
                    time.sleep(seconds / chunks)
            except BaseException as error:  # noqa: BLE001 - raised in join()
                self.error = error

        self.thread = threading.Thread(target=produce)
        self.thread.start()

    def join(self, timeout: float = 600) -> list[list[bytes | None]]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "still producing"
        if self.error:
            raise self.error
        return self.per_partition


def assert_same_as_replay(job: Job, per_partition) -> int:
    """Committed output == replay, record for record; returns how many records were compared."""
    expected, live = job.replay(per_partition), job.live()
    checked = 0
    for topic, records in expected.items():
        kept = without_keys(records, SENTINEL) if topic != "xp-dead-letter" else records
        got, want = as_multiset(live[topic]), as_multiset(kept)
        extra, lost = got - want, want - got  # nothing lost, nothing twice
        assert not extra and not lost, (f"{topic}: {sum(lost.values())} lost, {sum(extra.values())} not in replay:\n"
                                        + "\n".join(f"- {r.decode()}" for r in sorted(lost)[:6])
                                        + "\n" + "\n".join(f"+ {r.decode()}" for r in sorted(extra)[:6]))
        checked += len(kept)
    assert len(live["xp-session-events"]) > 1000
    return checked


def assert_one_line_per_fault(log: str) -> None:
    """What the user sees: the job's own lines, not librdkafka's retries (those are for log_level debug)."""
    warnings = [line for line in log.splitlines() if "level=warning" in line or "level=error" in line]
    assert not [line for line in warnings if "logger=sessionizer.librdkafka" in line], warnings[:10]
    assert len(warnings) <= 12, "\n".join(warnings)


def record(fault: str, test: str, spins: int, checked: int, recovery: str, duplicated: int = 0) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[fault] = {"test": test, "spins": spins, "records_checked": checked, "lost": 0, "duplicated": duplicated,
                      "recovery": recovery, "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def java_hash(text: str) -> int:
    """Java's String.hashCode, as Kafka places a group or transactional id on a coordinator partition."""
    h, units = 0, text.encode("utf-16-be")
    for at in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[at:at + 2], "big")) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    return 0 if h == -(1 << 31) else abs(h)


def coordinator_leaders(bootstrap: str) -> dict[str, dict[int, int]]:
    """The leader of each partition of the group and transaction coordinators' topics."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return {name: {p: part.leader for p, part in topics[name].partitions.items()}
            for name in ("__consumer_offsets", "__transaction_state") if name in topics}


def test_rolling_restart_of_every_broker_twice(cluster, tmp_path):
    """The MSK patching pattern: each broker stopped and started in turn, twice, mid-stream."""
    job = Job(cluster.bootstrap, "rolling", 6, tmp_path, replication=3)
    lines, chosen = with_sentinels(job, stream(200_000, 3000, seed=31))
    run = job.start("r", runtime='idle_timeout = "off"')
    wait_for(lambda: "msg=assigned" in run.log_text(), 60, run)
    producing = Producing(job, lines, chosen, seconds=40)
    restarts = [cluster.restart(node) for _ in range(2) for node in (1, 2, 3)]
    per_partition = producing.join()
    started = time.monotonic()
    job.wait_until_consumed(600, [run])
    caught_up = time.monotonic() - started
    assert run.stop() == 0
    checked = assert_same_as_replay(job, per_partition)
    log = run.log_text()
    assert "Traceback" not in log
    record("rolling restart of all 3 brokers, twice", "test_rolling_restart_of_every_broker_twice", 200_000, checked,
           f"each broker back in sync in {min(restarts):.0f}-{max(restarts):.0f} s; the job never stopped "
           f"(caught up {caught_up:.0f} s after the last record was produced)")


def test_kill_9_of_the_broker_holding_the_coordinators(cluster, tmp_path):
    """SIGKILL of the broker that leads most input partitions and hosts the job's group and
    transaction coordinators, mid-transaction; it comes back after 20 s."""
    cluster.wait_until_fully_replicated()
    # The coordinators' topics exist once any group and transactional producer has used them.
    warm = Job(cluster.bootstrap, "warm", 1, tmp_path, replication=3)
    warm_run = warm.start("w")
    wait_for(lambda: "msg=assigned" in warm_run.log_text(), 60, warm_run)
    warm_run.stop()
    leaders = coordinator_leaders(cluster.bootstrap)
    victim = leaders["__transaction_state"][0]
    offsets = leaders["__consumer_offsets"]
    name = next(f"coord{n}" for n in range(10_000)
                if offsets[java_hash(f"coord{n}-group") % len(offsets)] == victim
                and leaders["__transaction_state"][java_hash(f"coord{n}-group-k") % 3] == victim)
    others = [n for n in (1, 2, 3) if n != victim]
    job = Job(cluster.bootstrap, name, 6, tmp_path, replication=3,
              leaders=[victim, victim, victim, victim, others[0], others[1]])
    lines, chosen = with_sentinels(job, stream(200_000, 3000, seed=32))
    run = job.start("k", runtime='idle_timeout = "off"')
    wait_for(lambda: "msg=assigned" in run.log_text(), 60, run)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})  # kept: its futures need it alive
    assert admin.describe_consumer_groups([job.group])[job.group].result(timeout=30).coordinator.id == victim
    producing = Producing(job, lines, chosen, seconds=40)
    time.sleep(8)  # mid-stream, transactions open
    cluster.kill(victim)
    killed = time.monotonic()
    time.sleep(20)
    cluster.revive(victim)
    back = time.monotonic() - killed
    per_partition = producing.join()
    job.wait_until_consumed(600, [run])
    assert run.stop() == 0
    checked = assert_same_as_replay(job, per_partition)
    log = run.log_text()
    assert "Traceback" not in log
    assert_one_line_per_fault(log)
    assert "Kafka unreachable" not in log  # one broker of three is not an outage: the job goes on
    said = [line for line in log.splitlines() if "a broker is unreachable" in line]
    assert len(said) == 1 and f"broker=127.0.0.1:{cluster.nodes[victim - 1].port} " in said[0], said
    paused = sum(float(line.split("paused_s=")[1].split()[0]) for line in log.splitlines() if "paused_s=" in line)
    record("kill -9 of the broker leading 4 of 6 input partitions, the group and the transaction coordinator",
           "test_kill_9_of_the_broker_holding_the_coordinators", 200_000, checked,
           f"broker down 20 s, back in sync {back - 20:.0f} s later; the job paused {paused:.0f} s (its coordinators "
           "moved), then went on from its last commit")


def test_a_paused_process_is_fenced_as_a_zombie(cluster, tmp_path):
    """SIGSTOP one of two processes for longer than its session timeout (6 s) and its transaction
    timeout (15 s); the other takes its partitions over; SIGCONT. No record of its stale
    transaction may become visible, and it must say that it lost its partitions."""
    job = Job(cluster.bootstrap, "zombie", 6, tmp_path, replication=3)
    lines, chosen = with_sentinels(job, stream(200_000, 3000, seed=33))
    first = job.start("a", runtime='idle_timeout = "off"')
    second = job.start("b", runtime='idle_timeout = "off"')
    wait_for(lambda: "msg=assigned" in first.log_text() and "msg=assigned" in second.log_text(), 60, first)
    producing = Producing(job, lines, chosen, seconds=50)
    time.sleep(6)
    assigned_before = second.log_text().count("msg=assigned")  # a cooperative join may take two steps
    os.kill(first.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for(lambda: second.log_text().count("msg=assigned") > assigned_before, 60, second)  # it took them over
    taken_over = time.monotonic() - stopped
    time.sleep(max(0.0, 20 - taken_over))
    os.kill(first.process.pid, signal.SIGCONT)
    per_partition = producing.join()
    job.wait_until_consumed(600, [second])
    assert second.stop() == 0
    if first.alive():
        first.stop()
    checked = assert_same_as_replay(job, per_partition)
    zombie_log = first.log_text()
    assert "lost partitions" in zombie_log, zombie_log[-3000:]
    after = zombie_log[zombie_log.index("lost partitions"):]
    assert 'msg=assigned partitions="' in after, after[-3000:]  # it rejoined the group with a share of its own
    record("a process paused (SIGSTOP) past its session and transaction timeouts, then resumed",
           "test_a_paused_process_is_fenced_as_a_zombie", 200_000, checked,
           f"its partitions taken over in {taken_over:.0f} s; on SIGCONT it was fenced and rejoined")


def test_the_whole_cluster_down_for_a_minute(cluster, tmp_path):
    """Every broker killed mid-run and started again 60 s later: the job waits (saying so), then resumes."""
    job = Job(cluster.bootstrap, "outage", 6, tmp_path, replication=3)
    lines, chosen = with_sentinels(job, stream(200_000, 3000, seed=34))
    half = len(lines) // 2
    run = job.start("o", runtime='idle_timeout = "off"')
    wait_for(lambda: "msg=assigned" in run.log_text(), 60, run)
    per_partition = job.produce(lines[:half], chosen[:half])
    time.sleep(3)  # mid-stream: transactions open
    cluster.kill_all()
    down = time.monotonic()
    time.sleep(60)
    assert run.alive(), run.log_text()[-3000:]
    cluster.start_all()
    back = time.monotonic() - down
    for partition, records in enumerate(job.produce(lines[half:], chosen[half:])):
        per_partition[partition].extend(records)
    job.wait_until_consumed(600, [run])
    assert run.stop() == 0
    checked = assert_same_as_replay(job, per_partition)
    log = run.log_text()
    assert "Traceback" not in log
    assert "Kafka unreachable, no broker answers: pausing until one does" in log
    assert "Kafka answers again" in log
    assert 'kafka="unreachable for ' in log  # the status lines go on during the outage, and say it
    assert_one_line_per_fault(log)
    record("all 3 brokers killed mid-run, started again after 60 s", "test_the_whole_cluster_down_for_a_minute",
           200_000, checked, f"cluster back in sync {back - 60:.0f} s after its restart; the job waited, "
           "then resumed from its last commit")



def start_to_assigned_seconds(log: str) -> list[float]:
    """For each lifetime in a log that got its partitions: seconds from 'starting' to 'assigned'."""
    def at(line: str) -> float:
        stamp = line.split("time=")[1].split()[0]
        return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + stamp[19:-1])

    spans, started = [], None
    for line in log.splitlines():
        if "logger=sessionizer.run msg=starting" in line:
            started = at(line)
        elif "msg=assigned" in line and started is not None:
            spans.append(at(line) - started)
            started = None
    return spans


def test_three_processes_killed_30_times_while_a_broker_restarts(cluster, tmp_path):
    """Three members of one group (static membership, as a deployment with fixed pod names has),
    30 kill -9 at random moments spread over them, and a broker restarted in the middle of it."""
    job = Job(cluster.bootstrap, "three", 6, tmp_path, replication=3)
    lines, chosen = with_sentinels(job, stream(200_000, 3000, seed=35))
    options = {name: dict(consumer=f'"group.instance.id" = "{name}"', runtime='idle_timeout = "off"')
               for name in "abc"}
    runs = {name: job.start(name, **options[name]) for name in "abc"}
    wait_for(lambda: all("msg=assigned" in run.log_text() for run in runs.values()), 60, runs["a"])
    producing = Producing(job, lines, chosen, seconds=50)
    rng = random.Random(14)
    restart: threading.Thread | None = None
    codes = []
    for kill in range(30):
        time.sleep(rng.uniform(0.3, 2.7))  # a process is often killed again while it starts or restores
        if kill == 10:
            restart = threading.Thread(target=cluster.restart, args=(2,))
            restart.start()
        name = rng.choice("abc")
        runs[name].kill()
        codes.append(runs[name].process.returncode)
        runs[name] = job.start(name, **options[name])
    per_partition = producing.join()
    restart.join(300)
    assert not restart.is_alive()
    started = time.monotonic()
    job.wait_until_consumed(600, list(runs.values()))
    caught_up = time.monotonic() - started
    for run in runs.values():
        assert run.stop() == 0
    checked = assert_same_as_replay(job, per_partition)
    # Each kill found its process alive (none had exited on its own); a process killed 0.3 s after
    # its start may not have logged a line yet, so lifetimes are not counted from the logs.
    assert codes == [-signal.SIGKILL] * 30
    logs = [run.log_text() for run in runs.values()]
    assert sum(log.count("logger=sessionizer.run msg=starting") for log in logs) >= 3
    assert not [log for log in logs if "Traceback" in log]
    spans = sorted(span for log in logs for span in start_to_assigned_seconds(log))
    assert spans
    record("30 kill -9 spread over 3 processes of one group while a broker restarts",
           "test_three_processes_killed_30_times_while_a_broker_restarts", 200_000, checked,
           f"a restarted process had its partitions back in {spans[len(spans) // 2]:.1f} s (median, longest "
           f"{spans[-1]:.1f} s); caught up {caught_up:.0f} s after the last record was produced")


def test_forward_to_both_targets_across_a_rolling_restart(cluster, auth_broker, tmp_path):
    """`sessionizer forward` reads the job's output topics on the cluster while every broker restarts
    in turn; to Xtremepush's Kafka (SCRAM, another cluster) and to its HTTP API. At least once: every
    record reaches each target, and the duplicates a restart makes are counted by their event ids."""
    records = final_records(8000)
    named = {prefix: {f"{prefix}-{topic}": pairs for topic, pairs in records.items()} for prefix in ("rk", "rh")}
    for topics in named.values():
        for topic in topics:
            create_topic(cluster.bootstrap, topic, 3, replication=3)
    create_topic(auth_broker.plaintext, "rk-xp-events", 3)
    user, password = next(iter(SCRAM_USERS.items()))
    server = FlakyXtremepush(faults=False)
    targets = {"rk": (f"""
kind = "kafka"
bootstrap_servers = "{auth_broker.address('SASL_SCRAM')}"
topic = "rk-xp-events"
username_env = "XP_USER"
password_env = "XP_PASSWORD"
ca = "{auth_broker.pki.ca}"
max_batch = 200
""", {"XP_USER": user, "XP_PASSWORD": password}), "rh": (f"""
kind = "http"
url = "{server.url}"
app_token_env = "XP_TOKEN"
max_batch = 100
""", {"XP_TOKEN": "xp-app-token"})}
    logs = {prefix: tmp_path / f"{prefix}.log" for prefix in targets}
    processes = {prefix: start_forward(forward_config(tmp_path, cluster.bootstrap, prefix, body), logs[prefix], env)
                 for prefix, (body, env) in targets.items()}

    def publish() -> None:  # the job's output, as it commits it: in steps while the brokers restart
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True})
        for start in range(0, 8000, 200):
            for topics in named.values():
                for topic, pairs in topics.items():
                    for key, value in pairs[start:start + 200]:
                        producer.produce(topic, value, key)
            producer.flush(60)
            time.sleep(1)
        assert producer.flush(120) == 0

    publishing = threading.Thread(target=publish)
    publishing.start()
    try:
        restarts = [cluster.restart(node) for node in (1, 2, 3)]
        publishing.join(300)
        assert not publishing.is_alive()
        for prefix, process in processes.items():
            wait_forwarded(cluster.bootstrap, f"{prefix}-forward", list(named[prefix]), process, timeout=300,
                           log=logs[prefix])
            assert stop_when_started(process, logs[prefix], starts=1) == 0, logs[prefix].read_text()[-3000:]
    finally:
        for process in processes.values():
            process.kill()
        server.server.shutdown()

    deliveries = {"rk": [(key.decode(), orjson.loads(value)) for key, value in
                         read_committed(auth_broker.plaintext, "rk-xp-events")],
                  "rh": [(event["value"].pop("event_id"), event) for event in server.delivered]}
    duplicated = 0
    for prefix, delivered in deliveries.items():
        expected = {i: orjson.loads(value) for i, value in expected_ids(named[prefix]).items()}
        by_id = {}
        for event_id_, event in delivered:
            assert by_id.setdefault(event_id_, event) == event  # a duplicate is the same record again
        assert set(by_id) == set(expected), f"{prefix}: {len(set(expected) - set(by_id))} never delivered"
        assert all(by_id[i] == event for i, event in expected.items())
        duplicated += len(delivered) - len(by_id)
        log = logs[prefix].read_text()
        assert "Traceback" not in log and "xp-app-token" not in log and password not in log
    record("rolling restart of all 3 brokers under `sessionizer forward`, to both targets (Kafka over SCRAM, HTTP)",
           "test_forward_to_both_targets_across_a_rolling_restart", 0, 2 * 16_000,
           f"each broker back in sync in {min(restarts):.0f}-{max(restarts):.0f} s; a forward starting while a broker "
           f"was away waited for it to create its dead-letter topic; {duplicated} records delivered twice "
           "(counted by their event ids)", duplicated=duplicated)
