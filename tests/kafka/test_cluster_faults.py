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
import signal
import threading
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from kit import Job, as_multiset, without_keys
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


def record(fault: str, test: str, spins: int, checked: int, recovery: str) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[fault] = {"test": test, "spins": spins, "records_checked": checked, "lost": 0, "duplicated": 0,
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
    os.kill(first.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for(lambda: second.log_text().count("msg=assigned") >= 2, 60, second)  # it took the partitions over
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

