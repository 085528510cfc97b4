"""The wallet example (SPEC section 7) on the real broker: bet/win/rollback records, copies
produced on purpose (retries close behind the first, and whole stretches sent again later),
copies of the last stretch sent again right after each restart (their first copies held by
restored state), and `sessionizer run` killed with SIGKILL several times; what it committed equals what
`sessionizer replay` makes of each partition's records, duplicates included."""

import random
import time

import orjson

from kit import ROOT, Job, as_multiset, partition_of, without_keys
from sessionizer.core.times import parse_time
from sessionizer.sample import SampleShape, generate
from test_run_equals_replay import wait_for

SENTINEL = "~end"
WALLET = ROOT / "examples" / "wallet-feed.toml"


def test_wallet_feed_with_duplicates_and_kill_9_commits_what_replay_makes(bootstrap, tmp_path):
    job = Job(bootstrap, "wallet", 3, tmp_path, base=WALLET)
    lines = list(generate(SampleShape(shape="wallet", events=24_000, players=400, seed=31, delayed_share=0.1,
                                      duplicate_share=0.03, other_events_share=0.01)))
    rng = random.Random(8)
    kills = 4
    chunk = len(lines) // (kills + 1)
    resent = [rng.choice(lines[:chunk]) for _ in range(300)]  # a producer that re-sends a stretch much later
    chosen = [partition_of(line, job.partitions, index, "playerId") for index, line in enumerate(lines)]
    per_partition = [[] for _ in range(job.partitions)]

    def produce(part: list[bytes], where: list[int] | None = None) -> None:
        where = where or [partition_of(line, job.partitions, 0, "playerId") for line in part]
        for partition, records in enumerate(job.produce(part, where)):
            per_partition[partition].extend(records)

    options = dict(consumer='"group.instance.id" = "w"', runtime='idle_timeout = "off"\ncommit_interval = "100ms"')
    run = job.start("w", **options)
    started_at = 0
    for kill in range(kills):
        # After a restart, the end of the last stretch comes again first: its first copies are held by
        # restored state, so these are duplicates across the restart.
        again = lines[kill * chunk - 150:kill * chunk] if kill else []
        produce(again + lines[kill * chunk:(kill + 1) * chunk] + (resent if kill == 2 else []))
        wait_for(lambda: "msg=assigned" in run.log_text()[started_at:], 60, run)
        time.sleep(rng.uniform(0.2, 1.5))
        run.kill()
        started_at = len(run.log_text())
        run = job.start("w", **options)
    produce(lines[kills * chunk:])
    # Each partition ends with a record a day later: stream time passes every real window.
    day_later = max(parse_time(orjson.loads(line)["ts"]) for line in lines) + 86_400_000
    produce([orjson.dumps({"type": "BET", "playerId": f"{SENTINEL}-{p}", "ts": day_later, "txId": SENTINEL,
                           "amount": "0", "game": SENTINEL}) for p in range(job.partitions)],
            list(range(job.partitions)))
    assert sorted(set(chosen)) == list(range(job.partitions))
    job.wait_until_consumed(600, [run])
    assert run.stop() == 0
    log = run.log_text()
    assert log.count("logger=sessionizer.run msg=starting") == kills + 1 and " core=native" in log
    restores_with_state = [line for line in log.splitlines()
                           if "restored partitions" in line and "changelog_records=0 " not in line]
    assert len(restores_with_state) >= 2

    expected = job.replay(per_partition)
    live = job.live()
    assert set(live) == set(expected) == {"xp-session-events", "xp-rolling-5min-game", "xp-dead-letter"}
    for topic, records in expected.items():
        kept = records if topic == "xp-dead-letter" else without_keys(records, SENTINEL)
        assert as_multiset(live[topic]) == as_multiset(kept), topic
    errors = [d["error"] for d in live["xp-dead-letter"]]
    assert errors.count("duplicate") > 300  # the retries close behind, and some of the stretch sent again
    assert sum(s["value"]["wins"] for s in live["xp-session-events"]) > 1000
