"""`make bench-kafka`: `sessionizer run` on the local broker, exactly-once on.

1. Throughput: 1M spins (100k players) produced to a 6-partition topic, then one
   `sessionizer run` process (the example job) consumes them; end-to-end events/s
   is 1M / (process start -> every input offset committed), and peak RSS is the
   process's high-water mark.
2. Bytes per open session: the core's own state for 100k open sessions (the compiled core:
   RSS growth in a process of its own; the pure-Python core: tracemalloc).
3. Restore: 100k players with open sessions, committed, then kill -9 and a
   restart; the restore time is what the restarted process logs for reading
   the changelog back.

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

from sessionizer.sample import SampleShape, generate  # noqa: E402

DATA = HERE / "data" / "spins-1m.jsonl"
RESULTS = HERE / "results"
SESSIONIZER = Path(sys.executable).parent / "sessionizer"
PARTITIONS = 6
ROUNDS = 5  # throughput runs with the monitoring endpoints off, and as many on, alternating


def main() -> None:
    if not DATA.exists():
        DATA.parent.mkdir(parents=True, exist_ok=True)
        print("generating 1M spins ...", file=sys.stderr)
        with open(DATA, "wb") as out:
            for line in generate(SampleShape(events=1_000_000, players=100_000, seed=99, delayed_share=0.2)):
                out.write(line + b"\n")
    work = Path(tempfile.mkdtemp(prefix="sessionizer-bench-"))
    with Broker(work / "broker", heap="1g") as broker:
        result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "machine": f"{os.cpu_count()} cores, {_cpu_model()}", "partitions": PARTITIONS}
        result.update(throughput(broker.bootstrap, work))
        result.update(restore(broker.bootstrap, work))
    result.update(bytes_per_session())
    result.update(bytes_per_session_native())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kafka.json").write_text(json.dumps(result, indent=2) + "\n")
    write_section(result)
    print(json.dumps(result, indent=2))


def throughput(bootstrap: str, work: Path) -> dict:
    """The same 1M records consumed by fresh groups, alternating the monitoring endpoints off and on
    (with /metrics scraped every second and the status page every 5 s, harsher than Prometheus'
    usual 15 s); the median of each."""
    lines = DATA.read_bytes().splitlines()
    create(bootstrap, "bench-events")
    started = time.perf_counter()
    produce(bootstrap, "bench-events", lines)
    produce_seconds = time.perf_counter() - started
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for round_ in range(ROUNDS):
        for mode in ("off", "on"):
            runs[mode].append(one_run(bootstrap, work, f"bench-{mode}-{round_}", len(lines), mode == "on"))
            print(f"throughput, metrics {mode}: {runs[mode][-1]['events_per_second']:,} events/s", file=sys.stderr)
    off = statistics.median(run["events_per_second"] for run in runs["off"])
    on = statistics.median(run["events_per_second"] for run in runs["on"])
    first = runs["off"][0]
    return {"events": len(lines), "produce_seconds": round(produce_seconds, 2),
            "run_seconds": first["run_seconds"], "events_per_second": round(off),
            "events_per_second_runs": [run["events_per_second"] for run in runs["off"]],
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
            "peak_rss_mib_metrics_on": max(run["peak_rss_mib"] for run in runs["on"])}


def one_run(bootstrap: str, work: Path, group: str, total: int, metrics: bool) -> dict:
    port = free_port()
    config = write_config(work / f"{group}.toml", bootstrap, "bench-events", group,
                          ROOT / "examples" / "xtremepush.toml", metrics_port=port if metrics else None)
    log_path = work / f"{group}.log"
    run_started = time.perf_counter()
    process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)], stderr=open(log_path, "wb"))
    scraper = Scraper(port) if metrics else None
    try:
        wait_committed(bootstrap, group, "bench-events", total, process)
        elapsed = time.perf_counter() - run_started
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


def restore(bootstrap: str, work: Path) -> dict:
    """100k players, each with an open session (gap 10 min, all within one minute of event time)."""
    base = 1_800_000_000_000
    lines = [orjson.dumps({"event": "spin", "user_id": f"r{n:06d}", "timestamp": base + n % 60_000,
                           "value": {"stake": 1, "win": 0, "game_code": "starburst", "channel": "web"}})
             for n in range(100_000)]
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
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = log_path.read_text().count("restored partitions")
    restarted = time.perf_counter()
    process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)], stderr=open(log_path, "ab"))
    deadline = time.monotonic() + 300
    while log_path.read_text().count("restored partitions") == before and time.monotonic() < deadline:
        time.sleep(0.1)
    to_ready = time.perf_counter() - restarted
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    last = [line for line in log_path.read_text().splitlines() if "restored partitions" in line][-1]
    fields = dict(re.findall(r"(\w+)=(\S+)", last))
    return {"restore_open_sessions": int(fields["open_windows"]), "restore_changelog_records": int(fields["changelog_records"]),
            "restore_seconds": float(fields["seconds"]), "restart_to_restored_seconds": round(to_ready, 2)}


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
part.take_changes()
assert part.open_windows == 100_000, part.open_windows
print((rss() - before) / 100_000)
"""


def bytes_per_session_native() -> dict:
    """The compiled core's memory for the same 100k open sessions: the process's RSS growth
    (its state lives outside Python's allocator, so tracemalloc cannot see it)."""
    done = subprocess.run([sys.executable, "-c", NATIVE_STATE], capture_output=True, check=True, text=True)
    return {"native_bytes_per_open_session_5_spins": round(float(done.stdout.strip()))}


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


def wait_committed(bootstrap: str, group: str, topic: str, total: int, process: subprocess.Popen) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
    assert ends == total, (ends, total)
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"sessionizer run exited with {process.returncode}")
            done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
            if done >= total:
                return
            time.sleep(0.2)
    finally:
        consumer.close()


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
        f"vary by more than that on this machine); a /metrics answer takes {r['metrics_answer_ms_median']} ms and the status "
        f"page {r['page_answer_ms_median']} ms (medians, under load) |",
        f"| best 5-second rate seen in its status lines | {r['best_status_events_per_second']:,} events/s |",
        f"| peak RSS of that process | {r['peak_rss_mib']:.0f} MiB |",
        f"| state per open session (5 spins each), compiled core (RSS growth, key included) | "
        f"{r['native_bytes_per_open_session_5_spins']} bytes |",
        f"| the same, pure-Python core (tracemalloc) | {r['bytes_per_open_session_5_spins']} bytes "
        f"(+{r['key_string_bytes']} for the player id string) |",
        f"| restore after kill -9: {r['restore_open_sessions']:,} open sessions "
        f"({r['restore_changelog_records']:,} changelog records) | **{r['restore_seconds']:.2f} s** "
        f"(restart to restored: {r['restart_to_restored_seconds']:.1f} s) |",
        "",
        "Goals (issues): at least 100k events/s, restore of 100k open sessions within 2 s; the monitoring "
        "endpoints cost at most 3 % of the throughput.",
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
