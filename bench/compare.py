"""`make bench-compare`: sessionizer against the tools users would pick instead, same work, same run.

Streaming, on one local broker: the same 1M spins (plus one end marker per partition, a day
later, which moves every partition's stream time past every window so each tool emits its
last final windows) go to a fresh 6-partition topic per contender:

- sessionizer run (exactly-once, bench/compare.toml),
- the limit: a transactional passthrough in Python (bench/passthrough.py: consume, produce the
  same bytes, commit every 250 ms with the offsets in the transaction), no aggregation,
- Kafka Streams with its defaults (exactly_once_v2, suppress until windows close), and tuned as
  its experts would, with 2 and with 1 stream threads (bench/peers/kafka-streams),
- Quix Streams tuned (exactly-once, 250 ms commits, .final(closing_strategy="partition");
  bench/peers/quix), on the first QUIX_EVENTS spins only: it runs at about 1,000 events/s here,
- Flink SQL (SESSION and TUMBLE window TVFs, exactly-once Kafka sink; bench/peers/flink).

Each runs from its start until its committed input offsets reach the end, then until its
committed output stops growing. Two rates: over the whole span from process start, and after
warm-up (from its first committed input offset on: JVM start, rebalance and topology set-up
left out). Replay/backfill: the 500k-spin file through sessionizer replay, DuckDB
(bench/peers/duckdb) and a bare orjson parse loop. Output agreement: sessions by gap (uncapped)
and 2-minute windows, compared on their number and their totals with what `sessionizer replay`
makes of the same records, partition by partition (each partition has its own stream time).

Writes bench/results/compare.json, the chart bench/compare.png and a section of BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tools" / "kafka"))
from broker import Broker  # noqa: E402

import inputs  # noqa: E402 (bench/, the directory of this script)

PY = Path(sys.executable)
BIN = PY.parent
DATA_1M = inputs.SPINS_1M
DATA_500K = inputs.SPINS_500K
RESULTS = HERE / "results"
CHART = HERE / "compare.png"  # committed with BENCHMARKS.md, which shows it
PEER_JAR = HERE / "peers" / "kafka-streams" / "target" / "peer.jar"
PEER_SOURCES = HERE / "peers" / "kafka-streams" / "src"
QUIX_EVENTS = 100_000
PARTITIONS = 6
SENTINEL = "~end"
SETTLE_SECONDS = 15  # output unchanged this long after the input is consumed: done
CAP_SECONDS = 900  # a contender still consuming after this long is stopped; its rate is what it did


def main() -> None:
    if sys.argv[1:] == ["--replay-only"]:  # the replay half again, next to the last streaming results
        return replay_only()
    if sys.argv[1:] == ["--report"]:  # the chart and BENCHMARKS.md section again, from the last results
        results = json.loads((RESULTS / "compare.json").read_text())
        chart(results, CHART)
        return write_section(results)
    ensure_inputs()
    work = Path(tempfile.mkdtemp(prefix="sessionizer-compare-"))
    lines = DATA_1M.read_bytes().splitlines()
    partitions = [partition_for(line) for line in lines]
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
               "versions": versions(), "streaming": {}, "replay": {}}
    quix_lines, quix_partitions = with_end_markers(lines[:QUIX_EVENTS], partitions[:QUIX_EVENTS])
    lines, partitions = with_end_markers(lines, partitions)
    references = {len(lines): replay_reference(work, lines, partitions),
                  len(quix_lines): replay_reference(work, quix_lines, quix_partitions)}
    results["references"] = {str(n): summary for n, summary in references.items()}
    with Broker(work / "broker", heap="1g") as broker:
        for name, start, stream in CONTENDERS:
            print(f"--- {name}", file=sys.stderr, flush=True)
            records, where = (quix_lines, quix_partitions) if stream == "quix" else (lines, partitions)
            results["streaming"][name] = stream_contender(broker.bootstrap, work, name, start, records, where)
            save(results)  # kept as it goes: `--replay-only` finishes a run whose replay half failed
    results["replay"] = replay_contenders(work)
    results["agreement"] = agreement(results)
    save(results)
    chart(results, CHART)
    write_section(results)
    print(json.dumps({k: v for k, v in results.items() if k != "agreement"}, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)


def save(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


def replay_only() -> None:
    results = json.loads((RESULTS / "compare.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="sessionizer-compare-"))
    results["replay"] = replay_contenders(work)
    results["replay_date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["agreement"] = agreement(results)
    save(results)
    chart(results, CHART)
    write_section(results)
    shutil.rmtree(work, ignore_errors=True)


# -- inputs --------------------------------------------------------------------------------------

def ensure_inputs() -> None:
    inputs.ensure(DATA_1M)
    inputs.ensure(DATA_500K)
    newest_source = max(f.stat().st_mtime for f in PEER_SOURCES.rglob("*.java"))
    if not PEER_JAR.exists() or PEER_JAR.stat().st_mtime < newest_source:
        print("building the Kafka Streams peer ...", file=sys.stderr)
        subprocess.run(["mvn", "-q", "-B", "-f", str(HERE / "peers" / "kafka-streams" / "pom.xml"), "package",
                        "-DskipTests"], check=True)


def partition_for(line: bytes) -> int:
    import zlib

    key = orjson.loads(line)["user_id"]
    return zlib.crc32(str(key).encode()) % PARTITIONS


def with_end_markers(lines: list[bytes], partitions: list[int]) -> tuple[list[bytes], list[int]]:
    """A copy with one spin a day after the last per partition (its timestamp written as the
    spins' own are, which every contender's reader takes)."""
    last = max(time_of(orjson.loads(line)["timestamp"]) for line in lines[-1000:])
    stamp = datetime.fromtimestamp((last + 86_400_000) / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.000")
    lines, partitions = list(lines), list(partitions)
    for p in range(PARTITIONS):
        lines.append(orjson.dumps({"event": "spin", "user_id": f"{SENTINEL}-{p}", "timestamp": stamp,
                                   "value": {"stake": 0, "win": 0}}))
        partitions.append(p)
    return lines, partitions


def replay_config(work: Path) -> Path:
    """The compare job for `sessionizer replay`: its outputs in sessions.jsonl and rolling.jsonl."""
    config = work / "replay.toml"
    config.write_text((HERE / "compare.toml").read_text().replace("@SESSIONS@", "sessions").replace("@ROLLING@", "rolling"))
    return config


def replay_reference(work: Path, lines: list[bytes], partitions: list[int]) -> dict:
    """What `sessionizer replay` makes of these records, partition by partition (as a streaming
    job sees them: each partition its own stream time), summarised for the agreement checks."""
    config = replay_config(work)
    outputs: dict[str, list[dict]] = {"sessions": [], "rolling": []}
    for p in range(PARTITIONS):
        source, out = work / f"reference-{p}.jsonl", work / f"reference-out-{p}"
        source.write_bytes(b"\n".join(line for line, where in zip(lines, partitions) if where == p) + b"\n")
        subprocess.run([str(BIN / "sessionizer"), "replay", "--no-progress", "--config", str(config), "--output-dir",
                        str(out), str(source)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for kind in outputs:
            outputs[kind] += read_lines(out / f"{kind}.jsonl")
    return summarise(outputs)


def time_of(value) -> int:
    if isinstance(value, int):
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


# -- the streaming contenders -----------------------------------------------------------------

def start_sessionizer(bootstrap: str, work: Path, topic: str, group: str, sessions: str, rolling: str):
    config = work / "sessionizer.toml"
    config.write_text((HERE / "compare.toml").read_text().replace("@SESSIONS@", sessions).replace("@ROLLING@", rolling)
                      + f'\n[kafka]\nbootstrap_servers = "{bootstrap}"\ninput_topic = "{topic}"\ngroup_id = "{group}"\n'
                        f'client_id = "{group}"\n\n[runtime]\nidle_timeout = "off"\nstatus_interval = "5s"\n')
    return subprocess.Popen([str(BIN / "sessionizer"), "run", "--config", str(config)],
                            stderr=open(work / "sessionizer.log", "wb")), group


def start_passthrough(bootstrap: str, work: Path, topic: str, group: str, sessions: str, rolling: str):
    process = subprocess.Popen([str(PY), str(HERE / "passthrough.py"), bootstrap, topic, sessions, group,
                                str(10**12)], stdout=subprocess.DEVNULL, stderr=open(work / "passthrough.log", "wb"))
    return process, group


def kafka_streams(*tuning: str):
    """Start the Kafka Streams peer: its defaults (no arguments) or ("tuned", THREADS). The heap is
    fixed at 1 GiB (-Xms = -Xmx: no heap growth during the run) either way."""
    def start(bootstrap: str, work: Path, topic: str, group: str, sessions: str, rolling: str):
        state = work / f"ks-state-{group}"
        state.mkdir(exist_ok=True)
        process = subprocess.Popen(["java", "-Xms1g", "-Xmx1g", "-jar", str(PEER_JAR), bootstrap, topic, group, sessions,
                                    rolling, str(state), *tuning], stdout=open(work / f"{group}.log", "wb"),
                                   stderr=subprocess.STDOUT)
        return process, group
    return start


def start_quix(bootstrap: str, work: Path, topic: str, group: str, sessions: str, rolling: str):
    state = work / "quix-state"
    process = subprocess.Popen([str(PY), str(HERE / "peers" / "quix" / "app.py"), bootstrap, topic, group, sessions,
                                rolling, str(state)], stdout=open(work / "quix.log", "wb"), stderr=subprocess.STDOUT)
    return process, group


def start_flink(bootstrap: str, work: Path, topic: str, group: str, sessions: str, rolling: str):
    from peers.flink.run import start

    return start(bootstrap, work, topic, group, sessions, rolling), group


# name, how to start it, which stream ("full": 1M spins, "quix": the first QUIX_EVENTS)
CONTENDERS = [
    ("sessionizer", start_sessionizer, "full"),
    ("passthrough (the limit)", start_passthrough, "full"),
    ("kafka-streams defaults", kafka_streams(), "full"),
    ("kafka-streams tuned, 2 threads", kafka_streams("tuned", "2"), "full"),
    ("kafka-streams tuned, 1 thread", kafka_streams("tuned", "1"), "full"),
    ("quix-streams tuned", start_quix, "quix"),
    ("flink sql", start_flink, "full"),
]


def stream_contender(bootstrap: str, work: Path, name: str, start, lines: list[bytes], partitions: list[int]) -> dict:
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    topic, sessions, rolling = f"{slug}-events", f"{slug}-sessions", f"{slug}-rolling"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # Kept for good: the peers stamp their output with the (weeks old) event time, which time-based
    # retention would delete at once.
    keep = {"retention.ms": "-1"}
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1, config=keep)
                                       for t in (topic, sessions, rolling)]).values():
        future.result()
    produce(bootstrap, topic, lines, partitions)
    os.sync()  # the input (and the last contender's output) on disk first: no writeback during the run
    time.sleep(1)
    started = time.perf_counter()
    process, group = start(bootstrap, work, topic, f"{slug}-app", sessions, rolling)
    progress = wait_consumed(bootstrap, group, topic, len(lines), process, timeout=CAP_SECONDS)
    elapsed = progress["done_at"] - started
    warm = progress["done_at"] - progress["first_at"]
    wait_settled(bootstrap, [sessions, rolling])
    peak = peak_rss(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    wait_settled(bootstrap, [sessions, rolling], seconds=2)  # a transaction left open times out
    consumed = progress["consumed"]
    entry = {"events": len(lines), "consumed": consumed, "finished": consumed >= len(lines),
             "seconds_to_consume": round(elapsed, 2), "events_per_second": round(consumed / elapsed),
             "warm_events_per_second": round((consumed - progress["first_consumed"]) / warm) if warm > 0 else None,
             "peak_rss_mib": round(peak / 2**20)}
    if name.startswith("passthrough"):  # copies the input: nothing to agree on
        entry["records_out"] = {sessions: len(read_values(bootstrap, sessions))}
        return entry
    outputs = {kind: read_values(bootstrap, t) for kind, t in (("sessions", sessions), ("rolling", rolling))}
    entry["records_out"] = {t: len(outputs[k]) for k, t in (("sessions", sessions), ("rolling", rolling))}
    entry["summary"] = summarise(outputs)
    return entry


def produce(bootstrap: str, topic: str, lines: list[bytes], partitions: list[int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 50,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})
    for line, partition in zip(lines, partitions):
        key = orjson.loads(line)["user_id"].encode()
        while True:
            try:
                producer.produce(topic, line, key, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(300)


def wait_consumed(bootstrap: str, group: str, topic: str, total: int, process, timeout: float) -> dict:
    """Watch the group's committed input offsets until they reach `total`: when the first were
    committed (and how many), when the last were, and how many in all (fewer than `total` when
    the contender did not finish within `timeout`)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    deadline, done = time.monotonic() + timeout, 0
    first_at, first_consumed = None, 0
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the contender exited with {process.returncode}")
            try:
                done = sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
            except Exception:
                pass
            if done > 0 and first_at is None:
                first_at, first_consumed = time.perf_counter(), done
            if done >= total:
                break
            time.sleep(0.1)
    finally:
        consumer.close()
    if done < total:
        print(f"{group}: {done:,} of {total:,} events consumed in {timeout} s: stopped there", file=sys.stderr)
    now = time.perf_counter()
    return {"done_at": now, "consumed": done, "first_at": first_at or now, "first_consumed": first_consumed}


def ends(bootstrap: str, topics: list[str], committed: bool) -> tuple:
    """End offsets of every partition: the last stable offset (`committed`: what read_committed
    readers can see) or the high watermark (everything written, open transactions included)."""
    from confluent_kafka import IsolationLevel
    from confluent_kafka.admin import OffsetSpec

    admin = AdminClient({"bootstrap.servers": bootstrap})
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in range(PARTITIONS)},
                                 isolation_level=level, request_timeout=30)
    return tuple(sorted((tp.topic, tp.partition, f.result().offset) for tp, f in futures.items()))


def wait_settled(bootstrap: str, topics: list[str], seconds: float = SETTLE_SECONDS, timeout: float = 300) -> None:
    """Until the committed output stops growing and no transaction is left open on it."""
    last, since, deadline = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        stable, high = ends(bootstrap, topics, True), ends(bootstrap, topics, False)
        if stable != last:
            last, since = stable, time.monotonic()
        elif stable == high and time.monotonic() - since >= seconds:
            return
        time.sleep(1)
    print(f"warning: {topics} still have open transactions after {timeout} s", file=sys.stderr)


def read_values(bootstrap: str, topic: str) -> list[dict]:
    """Every committed record of a topic: read until each partition is known to be read up to its
    last stable offset (an end-of-partition event at or past it, or the position there); an early
    end-of-partition event alone is not enough."""
    stable = {p: offset for _, p, offset in ends(bootstrap, [topic], True)}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compare-read", "isolation.level": "read_committed",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    values = []
    pending = {p for p, offset in stable.items() if offset > 0}
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(10_000, 0.5):
            error = message.error()
            if error is None:
                values.append(orjson.loads(message.value()))
            elif error.code() == KafkaError._PARTITION_EOF and message.offset() >= stable[message.partition()]:
                pending.discard(message.partition())
        if pending:
            positions = consumer.position([TopicPartition(topic, p) for p in pending])
            pending -= {tp.partition for tp in positions if tp.offset >= stable[tp.partition]}
    consumer.close()
    if pending:
        print(f"warning: {topic} partitions {sorted(pending)} not read to their end", file=sys.stderr)
    return values


def peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- replay ------------------------------------------------------------------------------------------

FLOOR = "import sys, orjson\nloads = orjson.loads\nfor line in open(sys.argv[1], 'rb'):\n    loads(line)\n"


def replay_contenders(work: Path) -> dict:
    config = replay_config(work)
    runs = {
        "orjson parse floor": ([str(PY), "-c", FLOOR, str(DATA_500K)], None),
        "sessionizer replay": ([str(BIN / "sessionizer"), "replay", "--no-progress", "--config", str(config),
                                "--output-dir", str(work / "replay-out"), str(DATA_500K)], work / "replay-out"),
        "duckdb": ([str(PY), str(HERE / "peers" / "duckdb" / "replay.py"), str(DATA_500K), str(work / "duck-out")],
                   work / "duck-out"),
    }
    results = {}
    for name, (argv, out) in runs.items():
        timings = []
        for _ in range(3):
            # GNU time reports the peak RSS of the program itself: a child's own rusage would count
            # the pages of this (large) parent it was forked from.
            started = time.perf_counter()
            done = subprocess.run(["/usr/bin/time", "-f", "peak_rss_kib=%M", *argv], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr.decode()[-2000:]}")
            peak_kib = int(done.stderr.decode().rsplit("peak_rss_kib=", 1)[1].split()[0])
            timings.append((seconds, peak_kib * 1024))
        seconds = sorted(t for t, _ in timings)[1]
        entry = {"events": 500_000, "seconds": round(seconds, 2), "events_per_second": round(500_000 / seconds),
                 "peak_rss_mib": round(max(r for _, r in timings) / 2**20)}
        if out is not None:
            outputs = {"sessions": read_lines(out / "sessions.jsonl"), "rolling": read_lines(out / "rolling.jsonl")}
            entry["records_out"] = {k: len(v) for k, v in outputs.items()}
            entry["summary"] = summarise(outputs)
        results[name] = entry
    return results


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


# -- agreement ------------------------------------------------------------------------------------

def summarise(outputs: dict[str, list[dict]]) -> dict:
    """Count and totals of sessions and windows, without the end markers' own."""
    summary = {}
    for kind, records in outputs.items():
        kept = [r for r in records if not str(r.get("user_id", "")).startswith(SENTINEL)]
        summary[kind] = {
            "records": len(kept),
            "event_count": sum(int(r["value"]["event_count"]) for r in kept),
            "stake_total": str(sum((Decimal(str(r["value"]["stake_total"])) for r in kept), Decimal(0)).normalize()),
            "win_total": str(sum((Decimal(str(r["value"]["win_total"])) for r in kept), Decimal(0)).normalize()),
        }
    return summary


def agreement(results: dict) -> list[dict]:
    rows = []
    for name, entry in results["streaming"].items():
        if "summary" in entry:
            reference = results["references"][str(entry["events"])]
            rows.append(compare_summary("streaming", name, reference, entry["summary"]))
    replay_ref = results["replay"]["sessionizer replay"]["summary"]
    rows.append(compare_summary("replay", "duckdb", replay_ref, results["replay"]["duckdb"]["summary"]))
    return rows


def compare_summary(mode: str, name: str, ours: dict, theirs: dict) -> dict:
    differences = []
    for kind in ("sessions", "rolling"):
        for field in ("records", "event_count", "stake_total", "win_total"):
            if str(ours[kind][field]) != str(theirs[kind][field]):
                differences.append(f"{kind}.{field}: replay {ours[kind][field]}, {name} {theirs[kind][field]}")
    return {"mode": mode, "peer": name, "same": not differences, "differences": differences}


# -- report ------------------------------------------------------------------------------------------

def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {model}"


def versions() -> dict:
    from importlib.metadata import version

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {"python": sys.version.split()[0], "confluent-kafka": version("confluent-kafka"),
            "quixstreams": version("quixstreams"), "duckdb": version("duckdb"), "orjson": version("orjson"),
            "kafka-streams": "4.1.1", "kafka broker": "4.1.1", "java": java}


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, section, title in ((left, "streaming", "On Kafka, exactly-once, after warm-up"),
                                 (right, "replay", "Replay / backfill (500k spins)")):
        names = list(results[section])
        # streaming: after warm-up (the rate the table compares); replay: the whole process
        rates = [results[section][n].get("warm_events_per_second") or results[section][n]["events_per_second"]
                 for n in names]
        colors = ["#1f77b4" if n.startswith("sessionizer") else "#999999" for n in names]
        bars = axis.barh(names, rates, color=colors)
        axis.bar_label(bars, labels=[f"{r:,}" for r in rates], padding=3)
        axis.set_title(title)
        axis.set_xlabel("events/s")
        axis.invert_yaxis()
        axis.set_xlim(0, max(rates) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ratio(value: float) -> str:
    """Two significant digits: 1.61x, 0.066x, 0.0044x."""
    return f"{value:.2g}x" if value < 1 else f"{value:.2f}x"


def write_section(r: dict) -> None:
    s, p = r["streaming"], r["replay"]
    ours_warm = s["sessionizer"]["warm_events_per_second"]
    rows = ["| contender (streaming, exactly-once) | events consumed | events/s from start | events/s after warm-up "
            "| vs sessionizer (after warm-up) | peak RSS | records out (sessions / rolling) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in s.items():
        out = " / ".join(f"{n:,}" for n in e["records_out"].values())
        consumed = f"{e['consumed']:,}" + ("" if e["finished"] else f" (stopped after {CAP_SECONDS} s)")
        warm = e.get("warm_events_per_second") or e["events_per_second"]
        rows.append(f"| {name} | {consumed} | {e['events_per_second']:,} | {warm:,} | {ratio(warm / ours_warm)} | "
                    f"{e['peak_rss_mib']} MiB | {out} |")
    replay_ours = p["sessionizer replay"]["events_per_second"]
    rows += ["", "| contender (replay of 500k spins) | wall time | events/s | vs sessionizer | peak RSS |",
             "|---|---:|---:|---:|---:|"]
    for name, e in p.items():
        rows.append(f"| {name} | {e['seconds']:.2f} s | {e['events_per_second']:,} | "
                    f"{e['events_per_second'] / replay_ours:.2f}x | {e['peak_rss_mib']} MiB |")
    agreement_lines = []
    for row in r["agreement"]:
        verdict = "same counts and totals" if row["same"] else "; ".join(row["differences"])
        agreement_lines.append(f"- {row['mode']}, {row['peer']}: {verdict}")
    section = "\n".join([
        "<!-- compare-bench:start (written by `make bench-compare`) -->",
        f"Measured {r['date']}" + (f" (replay: {r['replay_date']})" if r.get("replay_date") else "")
        + f" on {r['machine']}; " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".",
        "",
        *rows,
        "",
        "![events/s](bench/compare.png)",
        "",
        "Output agreement on the overlapping semantics (uncapped sessions by gap, 2-minute tumbling windows; "
        "end markers' own windows left out):",
        *agreement_lines,
        "<!-- compare-bench:end -->",
    ])
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    start, end = "<!-- compare-bench:start", "<!-- compare-bench:end -->"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n## Side by side with Kafka Streams, Quix Streams and DuckDB (`make bench-compare`)\n\n" \
            + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
