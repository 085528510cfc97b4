"""`sessionizer run` on the real broker writes exactly what `sessionizer replay` writes, partition by partition.

Each test ends every input partition with a sentinel record a day later than the
rest: it moves stream time past every real window in both modes, so what the
live run has committed is comparable with replay (whose end of input then only
closes the sentinel's own windows, left out of the comparison).
"""

import random
import time

import orjson

from kit import Job, as_multiset, without_keys
from sessionizer.sample import SampleShape, generate

SENTINEL = "~end"


def stream(events: int, players: int, seed: int) -> list[bytes]:
    return list(generate(SampleShape(events=events, players=players, seed=seed, delayed_share=0.1,
                                     late_share=0.002, malformed_share=0.002, other_events_share=0.01)))


def with_sentinels(job: Job, lines: list[bytes]) -> tuple[list[bytes], list[int]]:
    """The lines, each partition then closed by its sentinel, with the partition of every record."""
    from kit import partition_of

    chosen = [partition_of(line, job.partitions, index) for index, line in enumerate(lines)]
    last = max(orjson.loads(line)["timestamp"] for line in lines if line.startswith(b'{"event":"spin"')
               and b'"timestamp":1' in line)
    for partition in range(job.partitions):
        lines.append(orjson.dumps({"event": "spin", "user_id": f"{SENTINEL}-{partition}", "timestamp": last + 86_400_000,
                                   "value": {"stake": 0, "game_code": SENTINEL}}))
        chosen.append(partition)
    return lines, chosen


def assert_same_as_replay(job: Job, per_partition) -> None:
    expected = job.replay(per_partition)
    live = job.live()
    for topic, records in expected.items():
        kept = without_keys(records, SENTINEL) if topic != "xp-dead-letter" else records
        assert as_multiset(live[topic]) == as_multiset(kept), topic
    assert len(live["xp-session-events"]) > 1000
    assert {d["error"] for d in live["xp-dead-letter"]} >= {"invalid_json", "late"}


def test_committed_output_equals_replay_per_partition(bootstrap, tmp_path):
    job = Job(bootstrap, "equal", 4, tmp_path)
    lines, chosen = with_sentinels(job, stream(250_000, 3000, seed=11))
    per_partition = job.produce(lines, chosen)
    run = job.start("one", runtime='idle_timeout = "off"')
    job.wait_until_consumed(600, [run])
    # A status line comes every status_interval (2 s): a run that consumed all in less waits for one.
    deadline = time.monotonic() + 15
    while "msg=status" not in run.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.stop() == 0
    assert_same_as_replay(job, per_partition)
    log = run.log_text()
    assert "msg=status" in log and "Traceback" not in log and " core=native" in log


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(bootstrap, tmp_path):
    job = Job(bootstrap, "killed", 3, tmp_path)
    lines, chosen = with_sentinels(job, stream(250_000, 3000, seed=12))
    rng = random.Random(5)
    # Static membership: the restarted process takes its partitions back at once.
    options = dict(consumer='"group.instance.id" = "k"', runtime='idle_timeout = "off"\ncommit_interval = "100ms"')
    kills = 12
    chunk = len(lines) // (kills + 1)
    per_partition = [[] for _ in range(job.partitions)]

    def produce(part: slice) -> None:
        for partition, records in enumerate(job.produce(lines[part], chosen[part])):
            per_partition[partition].extend(records)

    run = job.start("k", **options)
    run_started = 0
    for kill in range(kills):
        produce(slice(kill * chunk, (kill + 1) * chunk))  # every lifetime has work to do
        if kill % 3 == 2:
            time.sleep(rng.uniform(0.0, 1.0))  # during start-up or restore
        else:
            wait_for(lambda: "msg=assigned" in run.log_text()[run_started:], 60, run)
            time.sleep(rng.uniform(0.1, 1.5))  # while processing and committing
        run.kill()
        run_started = len(run.log_text())
        run = job.start("k", **options)
    produce(slice(kills * chunk, None))
    job.wait_until_consumed(600, [run])
    assert run.stop() == 0
    log = run.log_text()
    assert log.count("logger=sessionizer.run msg=starting") == kills + 1
    restores_with_state = [line for line in log.splitlines()
                           if "restored partitions" in line and "changelog_records=0 " not in line]
    assert len(restores_with_state) >= 6
    assert_same_as_replay(job, per_partition)


def wait_for(condition, timeout: float, run) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert run.alive(), f"exit code {run.process.returncode}:\n{run.log_text()[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"timed out:\n{run.log_text()[-3000:]}")


def test_two_processes_in_one_group_one_killed_midway(bootstrap, tmp_path):
    job = Job(bootstrap, "pair", 4, tmp_path)
    lines, chosen = with_sentinels(job, stream(120_000, 1500, seed=13))
    first = job.start("a", runtime='idle_timeout = "off"')
    second = job.start("b", runtime='idle_timeout = "off"')
    time.sleep(8)  # both members joined; partitions shared
    per_partition = job.produce(lines, chosen)
    time.sleep(2)
    first.kill()  # its partitions move to the other member after the session timeout
    job.wait_until_consumed(600, [second])
    assert second.stop() == 0
    assert_same_as_replay(job, per_partition)
    assert "assigned" in first.log_text() and "assigned" in second.log_text()


def test_the_pure_python_core_on_kafka_commits_what_the_compiled_one_replays(bootstrap, tmp_path, monkeypatch):
    """The runtime drives either core: live on the pure-Python one (as without the compiled core
    built), replay on the compiled one, the same records."""
    job = Job(bootstrap, "python-core", 2, tmp_path)
    lines, chosen = with_sentinels(job, stream(40_000, 800, seed=23))
    per_partition = job.produce(lines, chosen)
    monkeypatch.setenv("SESSIONIZER_CORE", "python")
    run = job.start("py", runtime='idle_timeout = "off"')
    job.wait_until_consumed(300, [run])
    assert run.stop() == 0
    assert " core=python" in run.log_text()
    monkeypatch.setenv("SESSIONIZER_CORE", "native")
    assert_same_as_replay(job, per_partition)
