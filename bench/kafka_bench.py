"""`make bench-kafka`: `sessionizer run` on the local broker, exactly-once on.

1. Throughput: 1M spins (100k players) produced to a 6-partition topic, then one
   `sessionizer run` process (the example job) consumes them; end-to-end events/s
   is 1M / (process start -> every input offset committed), and peak RSS is the
   process's high-water mark. The limit, a transactional passthrough (bench/passthrough.py),
   runs in the same rounds, after sessionizer's runs, timed the same way.
2. Bytes per open session: the core's own state for 100k open sessions (the compiled core:
   RSS growth in a process of its own; the pure-Python core: tracemalloc).
3. Restore: RESTORE_SESSIONS (1M) players with open sessions, committed, then kill -9 and a
   restart, RESTORES times over; the restore time is the median of what each restarted process
   logs for reading the changelog back.

Writes bench/results/kafka.json and the Kafka section of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tools" / "kafka"))
sys.path.insert(0, str(ROOT / "src"))
from broker import Broker, free_port  # noqa: E402

import inputs  # noqa: E402
from sessionizer.kafka.changelog import watermarks  # noqa: E402

DATA = inputs.SPINS_1M
RESULTS = HERE / "results"
SESSIONIZER = Path(sys.executable).parent / "sessionizer"
PARTITIONS = 6
ROUNDS = 7  # rounds of three throughput runs: monitoring endpoints off, on, and the passthrough


def main() -> None:
    inputs.ensure(DATA)
    work = Path(tempfile.mkdtemp(prefix="sessionizer-bench-"))
    with Broker(work / "broker", heap="1g") as broker:
        result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "machine": f"{os.cpu_count()} cores, {_cpu_model()}", "partitions": PARTITIONS}
        result.update(throughput(broker.bootstrap, work))
        result.update(idle_close(broker.bootstrap, work))
        result.update(restore(broker.bootstrap, work))
    result.update(bytes_per_session())
    result.update(bytes_per_session_native())
    result.update(scrape_cost())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kafka.json").write_text(json.dumps(result, indent=2) + "\n")
    write_section(result)
    print(json.dumps(result, indent=2))


def throughput(bootstrap: str, work: Path) -> dict:
    """The same 1M records consumed by fresh groups: each round runs sessionizer with the monitoring
    endpoints off, then on (with /metrics scraped every second and the status page every 5 s, harsher
    than Prometheus' usual 15 s), then the passthrough (the limit), side by side, so that a broker
    warming up (its JIT, its page cache) favours neither; a first round of each warms it up and is not
    counted. The medians of each, and the median of each round's sessionizer / passthrough share."""
    lines = DATA.read_bytes().splitlines()
    create(bootstrap, "bench-events")
    started = time.perf_counter()
    produce(bootstrap, "bench-events", lines)
    produce_seconds = time.perf_counter() - started
    one_run(bootstrap, work, "bench-warm-up", len(lines), False)
    one_passthrough(bootstrap, work, "passthrough-warm-up", len(lines))
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    limits: list[dict] = []
    for round_ in range(ROUNDS):
        for mode in ("off", "on"):
            runs[mode].append(one_run(bootstrap, work, f"bench-{mode}-{round_}", len(lines), mode == "on"))
            print(f"throughput, metrics {mode}: {runs[mode][-1]['events_per_second']:,} events/s", file=sys.stderr)
        limits.append(one_passthrough(bootstrap, work, f"passthrough-{round_}", len(lines)))
        print(f"passthrough: {limits[-1]['events_per_second']:,} events/s", file=sys.stderr)
    off = statistics.median(run["events_per_second"] for run in runs["off"])
    on = statistics.median(run["events_per_second"] for run in runs["on"])
    first = runs["off"][0]
    return {"events": len(lines), "produce_seconds": round(produce_seconds, 2),
            "run_seconds": first["run_seconds"], "events_per_second": round(off),
            "events_per_second_metrics_on": round(on),
            "events_per_second_metrics_on_runs": [run["events_per_second"] for run in runs["on"]],
            "metrics_overhead_percent": round((off - on) / off * 100, 1),
            "scrapes_per_run": [run["scrapes"] for run in runs["on"]],
            "metrics_answer_ms_median": round(statistics.median(
                t for run in runs["on"] for t in run["answer_seconds"]["/metrics"]) * 1000, 2),
            "page_answer_ms_median": round(statistics.median(
                t for run in runs["on"] for t in run["answer_seconds"]["/"]) * 1000, 2),
            "best_status_events_per_second": max(run["best_status"] or 0 for run in runs["off"]) or None,
            "peak_rss_mib": max(run["peak_rss_mib"] for run in runs["off"]),
            "peak_rss_mib_metrics_on": max(run["peak_rss_mib"] for run in runs["on"]),
            **shares(runs["off"], limits, "events_per_second", ""),
            **shares(runs["off"], limits, "warm_events_per_second", "warm_")}


def shares(runs: list[dict], limits: list[dict], rate: str, prefix: str) -> dict:
    """The passthrough's median rate, and sessionizer's share of it: each round's, and their median."""
    pairs = [(run[rate], limit[rate]) for run, limit in zip(runs, limits) if run[rate] and limit[rate]]
    return {f"{prefix}passthrough_events_per_second": round(statistics.median(limit[rate] for limit in limits)),
            f"{prefix}passthrough_runs": [limit[rate] for limit in limits],
            f"{prefix}events_per_second_runs": [run[rate] for run in runs],
            f"{prefix}passthrough_share_runs": [round(ours / limit, 3) for ours, limit in pairs],
            f"{prefix}passthrough_share": round(statistics.median(ours / limit for ours, limit in pairs), 3)}


def settle() -> None:
    """Before each timed run: what the previous run wrote (the passthrough writes all 1M records again)
    flushed to disk first, so that its writeback does not slow whichever run comes next."""
    os.sync()
    time.sleep(1)


def one_run(bootstrap: str, work: Path, group: str, total: int, metrics: bool) -> dict:
    port = free_port()
    config = write_config(work / f"{group}.toml", bootstrap, "bench-events", group,
                          ROOT / "examples" / "xtremepush.toml", metrics_port=port if metrics else None)
    log_path = work / f"{group}.log"
    make_topics(config)
    settle()
    run_started = time.perf_counter()
    process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)], stderr=open(log_path, "wb"))
    scraper = Scraper(port) if metrics else None
    try:
        first = wait_committed(bootstrap, group, "bench-events", total, process)
        done_at = time.perf_counter()
        elapsed = done_at - run_started
        peak = peak_rss(process.pid)
    finally:
        if scraper is not None:
            scraper.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    rates = [int(m) for m in re.findall(r"msg=status records_per_s=(\d+)", log_path.read_text())]
    if scraper is not None:
        assert scraper.failures == 0 and scraper.scrapes > 0, (scraper.scrapes, scraper.failures)
    return {"run_seconds": round(elapsed, 2), "events_per_second": round(total / elapsed),
            "warm_events_per_second": warm_rate(total, first, done_at),
            "best_status": max(rates) if rates else None, "peak_rss_mib": round(peak / 2**20, 1),
            "scrapes": scraper.scrapes if scraper is not None else 0,
            "answer_seconds": scraper.seconds if scraper is not None else {}}


class Scraper(threading.Thread):
    """What a Prometheus server and an operator's browser do to a running process: /metrics every second,
    the status page every 5 s (connection errors before the server is up are not counted)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.scrapes, self.failures, self._done = port, 0, 0, threading.Event()
        self.seconds: dict[str, list[float]] = {"/metrics": [], "/": []}  # each answer's time
        self.start()

    def run(self) -> None:
        tick = 0
        while not self._done.wait(1.0):
            paths = ["/metrics"] + (["/"] if tick % 5 == 0 else [])
            tick += 1
            for path in paths:
                try:
                    asked = time.perf_counter()
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                        response.read()
                        self.scrapes += 1
                        self.seconds[path].append(time.perf_counter() - asked)
                except urllib.error.HTTPError:
                    self.failures += 1
                except OSError:
                    pass  # not listening yet

    def stop(self) -> None:
        self._done.set()
        self.join(10)


def make_topics(config: Path) -> None:
    """A run's topics (outputs, changelogs) made before it is timed, by the runtime's own code, as the
    passthrough's output topic is: creating topics is a one-off at deployment, not part of a rate."""
    from sessionizer.config import load_run_settings
    from sessionizer.kafka.clients import new_admin
    from sessionizer.kafka.topics import ensure_topics
    settings = load_run_settings(config)
    ensure_topics(new_admin(settings), settings)


def one_passthrough(bootstrap: str, work: Path, group: str, total: int) -> dict:
    """The limit: bench/passthrough.py (consume, produce the same bytes, one transaction per 250 ms with
    the offsets in it; sessionizer's client settings) on the same topic, timed the same way."""
    create(bootstrap, f"{group}-out")
    settle()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(HERE / "passthrough.py"), bootstrap, "bench-events",
                                f"{group}-out", group, str(total)], stdout=subprocess.DEVNULL,
                               stderr=open(work / f"{group}.log", "wb"))
    first = wait_committed(bootstrap, group, "bench-events", total, process, may_exit=True)
    done_at = time.perf_counter()
    process.wait(60)
    return {"events_per_second": round(total / (done_at - started)),
            "warm_events_per_second": warm_rate(total, first, done_at)}


IDLE_TIMEOUT_S = 5  # sessionizer's default idle_timeout
GAP_S, GRACE_S, WINDOW_S = 10, 2, 10


def idle_close(bootstrap: str, work: Path) -> dict:
    """Windows closing when traffic stops. 300 players send spins in real time (event time = now),
    each starting and stopping at its own moment; for every session and window, the delay from when
    it could close by the wall clock (its last event + gap + grace; a window's end + grace) to its
    record being read committed. ksqlDB and Kafka Streams never close the last ones (stream time
    moves only with records)."""
    import random

    create(bootstrap, "idle-events")
    base = work / "idle-job.toml"
    base.write_text(f'[sessions]\ntopic = "idle-sessions"\ngap = "{GAP_S}s"\ngrace = "{GRACE_S}s"\n\n'
                    f'[[rolling]]\ntopic = "idle-rolling"\nsize = "{WINDOW_S}s"\ngrace = "{GRACE_S}s"\n\n'
                    '[dead_letter]\ntopic = "idle-dead-letter"\n')
    port = free_port()
    config = write_config(work / "idle.toml", bootstrap, "idle-events", "idle", base,
                          idle_timeout=f"{IDLE_TIMEOUT_S}s", metrics_port=port)
    process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)],
                               stderr=open(work / "idle.log", "wb"))
    arrivals: list[tuple[str, bytes, float]] = []
    done = threading.Event()

    def read() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "idle-reader", "auto.offset.reset": "earliest",
                             "isolation.level": "read_committed", "enable.auto.commit": False})
        consumer.subscribe(["idle-sessions", "idle-rolling"])
        while not done.is_set():
            for message in consumer.consume(1000, 0.05):
                if message.error() is None:
                    arrivals.append((message.topic(), message.value(), time.time()))
        consumer.close()

    reader = threading.Thread(target=read, daemon=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("idle-close bench: sessionizer run did not become ready")
            time.sleep(0.2)
        reader.start()
        rng = random.Random(3)
        sends = []
        for player in range(300):
            at = rng.uniform(0, 15)
            stop = at + rng.uniform(3, 35)
            while at < stop:
                sends.append((at, f"idle{player:03d}"))
                at += rng.uniform(0.5, 1.5)
        sends.sort()
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        began = time.monotonic()
        for offset, player in sends:
            pause = began + offset - time.monotonic()
            if pause > 0:
                producer.poll(pause)
            now_ms = int(time.time() * 1000)
            producer.produce("idle-events", orjson.dumps({"event": "spin", "user_id": player, "timestamp": now_ms,
                                                           "value": {"stake": 1, "win": 0}}), player.encode())
        producer.flush(30)
        time.sleep(GAP_S + GRACE_S + IDLE_TIMEOUT_S + 15)  # everything can close by now, with room to spare
    finally:
        done.set()
        reader.join(10) if reader.is_alive() else None
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    delays = []
    for topic, value, arrived in arrivals:
        record = orjson.loads(value)["value"]
        if topic == "idle-sessions":
            could_close = (record["session_end_ms"] + (GAP_S + GRACE_S) * 1000) / 1000
        else:
            could_close = (record["window_end_ms"] + GRACE_S * 1000) / 1000
        delays.append(arrived - could_close)
    delays.sort()
    sessions = sum(1 for topic, _, _ in arrivals if topic == "idle-sessions")
    if sessions < 300:
        raise SystemExit(f"idle-close bench: {sessions} sessions closed, expected at least 300")

    def quantile(q: float) -> float:
        return round(delays[min(len(delays) - 1, int(q * len(delays)))], 2)

    return {"idle_close_records": len(delays), "idle_close_sessions": sessions, "idle_close_p50_s": quantile(0.5),
            "idle_close_p99_s": quantile(0.99), "idle_close_max_s": round(delays[-1], 2),
            "idle_close_goal_s": IDLE_TIMEOUT_S + 0.25 + 1}


RESTORE_SESSIONS = 1_000_000
RESTORES = 3  # kill -9 and restart this many times: the median restore


def restore(bootstrap: str, work: Path) -> dict:
    """RESTORE_SESSIONS players, each with an open session (gap 10 min, all within one minute of event time)."""
    base = 1_800_000_000_000
    lines = [orjson.dumps({"event": "spin", "user_id": f"r{n:07d}", "timestamp": base + n % 60_000,
                           "value": {"stake": 1, "win": 0, "game_code": "starburst", "channel": "web"}})
             for n in range(RESTORE_SESSIONS)]
    create(bootstrap, "restore-events")
    produce(bootstrap, "restore-events", lines)
    sessions_only = work / "sessions-only.toml"
    sessions_only.write_text('[sessions]\ntopic = "restore-sessions"\ngap = "10m"\n'
                             '[dead_letter]\ntopic = "restore-dead-letter"\n')
    config = write_config(work / "restore.toml", bootstrap, "restore-events", "restore", sessions_only,
                          idle_timeout="off")
    log_path = work / "restore.log"
    process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)], stderr=open(log_path, "wb"))
    wait_committed(bootstrap, "restore", "restore-events", len(lines), process)
    time.sleep(1)
    seconds, to_ready, last = [], [], ""
    for _ in range(RESTORES):  # kill -9 the process holding the state, then time its restart's restore
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = log_path.read_text().count("restored partitions")
        restarted = time.perf_counter()
        process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)], stderr=open(log_path, "ab"))
        deadline = time.monotonic() + 300
        while log_path.read_text().count("restored partitions") == before and time.monotonic() < deadline:
            time.sleep(0.1)
        to_ready.append(time.perf_counter() - restarted)
        last = [line for line in log_path.read_text().splitlines() if "restored partitions" in line][-1]
        seconds.append(float(dict(re.findall(r"(\w+)=(\S+)", last))["seconds"]))
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    fields = dict(re.findall(r"(\w+)=(\S+)", last))
    return {"restore_open_sessions": int(fields["open_windows"]), "restore_changelog_records": int(fields["changelog_records"]),
            "restore_seconds": statistics.median(seconds), "restore_seconds_runs": seconds,
            "restart_to_restored_seconds": round(statistics.median(to_ready), 2)}


def scrape_cost() -> dict:
    """What the endpoints cost the process, measured without the machine's run-to-run noise: CPU time
    of one /metrics answer and one status page on a registry shaped like a 6-partition run's."""
    from prometheus_client import generate_latest

    from sessionizer.monitoring.health import Health
    from sessionizer.monitoring.metrics import RunMetrics, new_registry
    from sessionizer.monitoring.server import Monitor
    from sessionizer.monitoring.status import PartitionRow, Snapshot

    metrics = RunMetrics(new_registry())
    rows = []
    for partition in range(PARTITIONS):
        label = str(partition)
        for family in (metrics.records_read, metrics.records_accepted, metrics.records_skipped):
            family.labels(label).inc(1000)
        metrics.open_sessions.labels(label).set(5000)
        for name in ("xp-rolling-2min", "xp-rolling-5min-game"):
            metrics.open_windows.labels(label, name).set(3000)
        for family in (metrics.stream_time, metrics.stream_time_behind, metrics.consumer_lag):
            family.labels(label).set(1.0)
        rows.append(PartitionRow(partition, 10, 1_800_000_000_000, 1.0, 5000, {"xp-rolling-2min": 3000}, 1000))
    for code in ("invalid_json", "late", "partially_late", "bad_time", "bad_amount", "missing_key"):
        metrics.dead_letters.labels(code, "none").inc()
    for seconds in (0.01, 0.05, 0.2):
        metrics.commit_duration.observe(seconds)
        metrics.final_to_commit.observe(seconds)
    monitor = Monitor("sessionizer run", {"mode": "run"}, Health(60), metrics.registry, {"config": {"a": 1}},
                      metrics.recent_dead_letters)
    monitor.snapshot = Snapshot(partitions=tuple(rows), transactions={"committed": 100})
    metrics.recent_dead_letters.extend([orjson.dumps({"error": "late", "detail": "x" * 200, "source": {}})] * 20)

    def cpu_ms(action, times: int = 300) -> float:
        started = time.process_time()
        for _ in range(times):
            action()
        return (time.process_time() - started) / times * 1000

    metrics_ms, page_ms = cpu_ms(lambda: generate_latest(metrics.registry)), cpu_ms(monitor.page)
    return {"scrape_cpu_ms": round(metrics_ms, 2), "page_cpu_ms": round(page_ms, 2),
            # Scraped every second and the page every 5 s, as in the throughput runs:
            "endpoints_cpu_share_percent": round((metrics_ms + page_ms / 5) / 1000 * 100, 3)}


def bytes_per_session() -> dict:
    """The core's memory for 100k open sessions of 5 spins each (Python allocations, tracemalloc)."""
    from sessionizer.core.sessions import SessionRules, SessionStore

    tracemalloc.start()
    store = SessionStore(SessionRules(gap=600_000, grace=30_000, max_duration=600_000, max_events=200))
    before = tracemalloc.get_traced_memory()[0]
    keys = [f"p{n:06d}" for n in range(100_000)]
    after_keys = tracemalloc.get_traced_memory()[0]
    for spin in range(5):
        for n, key in enumerate(keys):
            store.offer(key, 1_800_000_000_000 + spin * 5000 + n, 1_000_000, 0, "starburst", "web", 0, lambda *a: None)
    used = tracemalloc.get_traced_memory()[0] - after_keys
    tracemalloc.stop()
    assert store.open_count == 100_000
    return {"bytes_per_open_session_5_spins": round(used / 100_000), "key_string_bytes": round((after_keys - before) / 100_000)}


NATIVE_STATE = """
from sessionizer.core.native import NativePartition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.spec import JobSpec, SessionOutput

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

rules = SessionRules(gap=600_000, grace=30_000, max_duration=600_000, max_events=200)
part = NativePartition(JobSpec(sessions=SessionOutput("s", rules)), track_changes=True)
lines = [b'{"user_id":"p%06d","timestamp":%d,"value":{"stake":1,"win":0,"game_code":"starburst","channel":"web"}}'
         % (n, 1_800_000_000_000 + spin * 5000 + n) for spin in range(5) for n in range(100_000)]
before = rss()
for number, line in enumerate(lines):
    part.feed(line, number)
assert part.open_windows == 100_000, part.open_windows
state = rss() - before
part.take_changes()
print(state / 100_000, (rss() - before) / 100_000)
"""


def bytes_per_session_native() -> dict:
    """The compiled core's memory for the same 100k open sessions: the process's RSS growth (its state
    lives outside Python's allocator, so tracemalloc cannot see it), median of 3 processes. The state
    is the growth once the records are in (the changes to commit are marked in it); beside it, the
    growth once all 100k changed states were also taken as changelog records and those freed: what
    Python's heap keeps of one commit's records, which the next commit's reuse (not state)."""
    runs = [subprocess.run([sys.executable, "-c", NATIVE_STATE], capture_output=True, check=True, text=True)
            .stdout.split() for _ in range(3)]
    return {"native_bytes_per_open_session_5_spins": round(statistics.median(float(state) for state, _ in runs)),
            "native_bytes_per_open_session_5_spins_runs": [round(float(state)) for state, _ in runs],
            "native_bytes_after_commit_per_open_session": round(statistics.median(float(after) for _, after in runs))}


def create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()


def produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 50,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})
    for line in lines:
        match = re.search(rb'"user_id":"([^"]*)"', line)
        key = match.group(1) if match else None
        while True:
            try:
                producer.produce(topic, line, key)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


def write_config(path: Path, bootstrap: str, topic: str, group: str, base: Path, idle_timeout: str = "5s",
                 metrics_port: int | None = None) -> Path:
    text = base.read_text()
    metrics = f"\n[metrics]\nport = {metrics_port}\n" if metrics_port is not None else ""
    path.write_text(text + f'\n[kafka]\nbootstrap_servers = "{bootstrap}"\ninput_topic = "{topic}"\n'
                           f'group_id = "{group}"\nclient_id = "{group}-1"\n\n'
                           f'[runtime]\nidle_timeout = "{idle_timeout}"\nstatus_interval = "5s"\n' + metrics)
    return path


def wait_committed(bootstrap: str, group: str, topic: str, total: int, process: subprocess.Popen,
                   may_exit: bool = False) -> tuple[float, int]:
    """Watch the group's committed offsets until all `total` records are: (when the first were seen
    committed, how many then), as `make bench-compare` times its contenders after warm-up."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = sum(watermarks(consumer, tp)[1] for tp in tps)  # asked again while a new topic's leader settles
    assert ends == total, (ends, total)
    first: tuple[float, int] | None = None
    try:
        while True:
            if process.poll() is not None and not (may_exit and process.returncode == 0):
                raise SystemExit(f"{process.args[0]} exited with {process.returncode}")
            done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
            if done > 0 and first is None:
                first = (time.perf_counter(), done)
            if done >= total:
                return first or (time.perf_counter(), done)
            time.sleep(0.1)
    finally:
        consumer.close()


def warm_rate(total: int, first: tuple[float, int], done_at: float) -> int | None:
    """Events/s from the first committed offsets on: process start, group join and producer set-up left out."""
    first_at, first_done = first
    return round((total - first_done) / (done_at - first_at)) if done_at > first_at and total > first_done else None


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def write_section(r: dict) -> None:
    section = "\n".join([
        "<!-- kafka-bench:start (written by `make bench-kafka`) -->",
        f"Measured {r['date']} on {r['machine']}; local single-node Kafka 4.1.1 broker (KRaft), "
        f"{r['partitions']}-partition input topic, exactly-once on (one transaction per 250 ms).",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| end-to-end throughput, 1M spins, one `sessionizer run` process (median of {len(r['events_per_second_runs'])}: "
        f"{', '.join(f'{n:,}' for n in r['events_per_second_runs'])}) | **{r['events_per_second']:,} events/s** "
        f"({r['run_seconds']:.1f} s from process start to the last input offset committed, first run) |",
        f"| the same with `[metrics]` on, /metrics scraped every second and the status page every 5 s (median of "
        f"{', '.join(f'{n:,}' for n in r['events_per_second_metrics_on_runs'])}) | "
        f"**{r['events_per_second_metrics_on']:,} events/s**: {-r['metrics_overhead_percent']:+.1f} % against off (runs "
        f"vary by more than that on this machine) |",
        f"| what the endpoints cost, without that noise: CPU time of one /metrics answer and one status page "
        f"(a 6-partition registry) | {r['scrape_cpu_ms']} ms and {r['page_cpu_ms']} ms: at one scrape a second and a "
        f"page every 5 s, **{r['endpoints_cpu_share_percent']:.2f} %** of one core (goal: at most 3 % of the "
        f"throughput); answers took {r['metrics_answer_ms_median']} ms and {r['page_answer_ms_median']} ms under load "
        f"(waiting for the main loop's GIL) |",
        f"| best 5-second rate seen in its status lines | {r['best_status_events_per_second']:,} events/s |",
        f"| the limit: a transactional passthrough in Python (consume, produce the same bytes, 250 ms transactions, "
        f"same client settings; run in each round after sessionizer's two, a warm-up round of both not counted; "
        f"from process start, median of {', '.join(f'{n:,}' for n in r['passthrough_runs'])}) | "
        f"{r['passthrough_events_per_second']:,} events/s: sessionizer runs at "
        f"**{r['passthrough_share']:.0%}** of it from process start (the median of each round's share: "
        f"{', '.join(f'{share:.0%}' for share in r['passthrough_share_runs'])}) |",
        f"| the same after warm-up, as `make bench-compare` compares its contenders: from the first committed input "
        f"offsets on, process start, group join and producer set-up left out (passthrough: median of "
        f"{', '.join(f'{n:,}' for n in r['warm_passthrough_runs'])}; sessionizer: "
        f"{', '.join(f'{n:,}' for n in r['warm_events_per_second_runs'])}) | "
        f"{r['warm_passthrough_events_per_second']:,} events/s: sessionizer runs at "
        f"**{r['warm_passthrough_share']:.0%}** of it (each round's share: "
        f"{', '.join(f'{share:.0%}' for share in r['warm_passthrough_share_runs'])}) |",
        f"| peak RSS of that process | {r['peak_rss_mib']:.0f} MiB |",
        f"| windows closing when traffic stops ({r['idle_close_records']:,} sessions and 10 s windows of 300 players "
        f"sending in real time, then stopping): delay from when each could close by the wall clock to its record "
        f"read committed | p50 {r['idle_close_p50_s']:.2f} s, **p99 {r['idle_close_p99_s']:.2f} s**, max "
        f"{r['idle_close_max_s']:.2f} s (goal p99 <= idle_timeout + commit_interval + 1 s = "
        f"{r['idle_close_goal_s']:.2f} s; ksqlDB and Kafka Streams never close these: their stream time moves "
        f"only with new records) |",
        f"| state per open session (5 spins each), compiled core (RSS growth, key included) | "
        f"**{r['native_bytes_per_open_session_5_spins']} bytes** (goal: at most 300; median of "
        f"{', '.join(map(str, r['native_bytes_per_open_session_5_spins_runs']))}); "
        f"{r['native_bytes_after_commit_per_open_session']} bytes once all 100k changed states were also taken "
        f"for one commit's changelog and freed (Python's heap keeps part of those records' memory for the next "
        f"commit's: not state) |",
        f"| the same, pure-Python core (tracemalloc) | {r['bytes_per_open_session_5_spins']} bytes "
        f"(+{r['key_string_bytes']} for the player id string) |",
        f"| restore after kill -9: {r['restore_open_sessions']:,} open sessions "
        f"({r['restore_changelog_records']:,} changelog records; median of "
        f"{', '.join(f'{t:.2f}' for t in r['restore_seconds_runs'])} s, each after a kill -9) | "
        f"**{r['restore_seconds']:.2f} s** "
        f"(goal: 1,000,000 within 3 s; restart to restored: {r['restart_to_restored_seconds']:.1f} s) |",
        "",
        "Goals (issues): at least 100k events/s and at least 90 % of the passthrough's rate; at most 300 bytes "
        "per open session of 5 spins; restore of 1,000,000 open sessions within 3 s; the monitoring endpoints "
        "cost at most 3 % of the throughput.",
        "<!-- kafka-bench:end -->",
    ])
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = "<!-- kafka-bench:start", "<!-- kafka-bench:end -->"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n## `sessionizer run` on Kafka (`make bench-kafka`)\n\n" + section + "\n"
    path.write_text(text)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-section"]:  # BENCHMARKS.md again from the last results, without running
        write_section(json.loads((RESULTS / "kafka.json").read_text()))
    else:
        main()
