"""Bad state on Kafka stops `sessionizer run` at start, before it consumes anything, with a
message naming the topic and what to do; nothing is rebuilt from empty state."""

import time

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kit import Job, committed_offsets, create_topic, end_offsets


def spins(count: int, start_ms: int = 1_700_000_000_000) -> list[bytes]:
    return [b'{"event":"spin","user_id":"p%d","timestamp":%d,"value":{"stake":1,"win":0}}' % (i % 17, start_ms + i * 1000)
            for i in range(count)]


def refused(job: Job, client: str, timeout: float = 90) -> str:
    """Start a run, expect it to exit 2 on its own; returns its log."""
    run = job.start(client)
    try:
        code = run.process.wait(timeout)
    except Exception:
        raise AssertionError(f"still running after {timeout} s:\n{run.log_text()[-3000:]}") from None
    assert code == 2, run.log_text()[-3000:]
    return run.log_text()


def consume_all(job: Job, client: str, lines: list[bytes]) -> None:
    job.produce(lines)
    run = job.start(client)
    job.wait_until_consumed(90, [run])
    assert run.stop() == 0


def topics(bootstrap: str) -> dict[str, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return {name: len(t.partitions) for name, t in admin.list_topics(timeout=10).topics.items()}


def delete_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([name]).values():
        future.result()
    deadline = time.monotonic() + 30
    while name in topics(bootstrap):
        assert time.monotonic() < deadline, f"{name} not deleted"
        time.sleep(0.2)


def recreate_topic(bootstrap: str, name: str, partitions: int) -> None:
    delete_topic(bootstrap, name)
    deadline = time.monotonic() + 30
    while True:  # the broker may still be removing the old one
        try:
            create_topic(bootstrap, name, partitions)
            return
        except KafkaException:
            assert time.monotonic() < deadline
            time.sleep(0.5)


def create_changelog(bootstrap: str, name: str, partitions: int) -> None:
    """A changelog made before the job starts (compacted, as the runtime makes them)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, config={"cleanup.policy": "compact"})]).values():
        future.result()


def test_a_changelog_with_another_partition_count_stops_the_start(bootstrap, tmp_path):
    job = Job(bootstrap, "state-count", 3, tmp_path)
    changelog = f"{job.group}-sessions-changelog"
    create_changelog(bootstrap, changelog, 2)
    job.produce(spins(50))

    log = refused(job, "c")
    assert f"changelog topic '{changelog}' has 2 partitions but input topic '{job.input_topic}' has 3" in log
    assert "kafka-consumer-groups --delete-offsets" in log
    # Before consuming: no offsets committed, no output topic made, the changelog left as it was.
    assert committed_offsets(bootstrap, job.group, job.input_topic, 3) == {p: -1001 for p in range(3)}
    now = topics(bootstrap)
    assert now[changelog] == 2
    assert not any(topic in now for topic in job.outputs.values())


def test_a_deleted_changelog_stops_the_start_but_a_new_aggregation_starts_empty(bootstrap, tmp_path):
    job = Job(bootstrap, "state-deleted", 2, tmp_path)
    consume_all(job, "first", spins(300))

    # A rolling window added to the config since: its changelog is new, and that is fine.
    job.base += '\n[[rolling]]\ntopic = "state-deleted-xp-rolling-10min"\nsize = "10m"\ngrace = "1m"\n'
    added = f"{job.group}-state-deleted-xp-rolling-10min-changelog"
    consume_all(job, "second", spins(40, start_ms=1_700_001_000_000))
    assert added in topics(bootstrap)

    gone = f"{job.group}-{job.outputs['xp-rolling-2min']}-changelog"
    delete_topic(bootstrap, gone)
    before = committed_offsets(bootstrap, job.group, job.input_topic, 2)
    log = refused(job, "third")
    assert f"changelog topic '{gone}' does not exist but group '{job.group}' has committed offsets" in log
    assert gone not in topics(bootstrap)  # not rebuilt from empty
    assert committed_offsets(bootstrap, job.group, job.input_topic, 2) == before


def test_state_without_committed_offsets_stops_the_start(bootstrap, tmp_path):
    """Kafka deletes a group's offsets with their topic (and expires them after
    offsets.retention.minutes): the changelog's state then belongs to records the job would not
    resume after."""
    job = Job(bootstrap, "state-input", 3, tmp_path)
    consume_all(job, "first", spins(300))
    assert all(offset > 0 for offset in committed_offsets(bootstrap, job.group, job.input_topic, 3).values())

    recreate_topic(bootstrap, job.input_topic, 3)
    job.produce(spins(6))
    assert committed_offsets(bootstrap, job.group, job.input_topic, 3) == {p: -1001 for p in range(3)}
    log = refused(job, "same-count")
    assert f"changelog topic '{job.group}-sessions-changelog' holds state for input partitions without a " \
           f"committed offset of group '{job.group}'" in log
    assert committed_offsets(bootstrap, job.group, job.input_topic, 3) == {p: -1001 for p in range(3)}

    recreate_topic(bootstrap, job.input_topic, 2)
    log = refused(job, "fewer")
    assert f"changelog topic '{job.group}-sessions-changelog' has 3 partitions but input topic " \
           f"'{job.input_topic}' has 2" in log


def test_an_aborted_first_transaction_is_not_state(bootstrap, tmp_path):
    """Killed before its first commit: the changelog holds only aborted records, the start goes on."""
    job = Job(bootstrap, "state-aborted", 3, tmp_path)
    changelog = f"{job.group}-sessions-changelog"
    create_changelog(bootstrap, changelog, 3)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "state-aborted-test"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(changelog, b"{}", key=b"p1", partition=1)
    producer.flush(30)
    producer.abort_transaction(30)
    assert end_offsets(bootstrap, changelog)[1] > 0

    consume_all(job, "c", spins(100))
    assert sum(committed_offsets(bootstrap, job.group, job.input_topic, 3).values()) == 100
