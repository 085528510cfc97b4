"""The monitoring pieces without Kafka: health, redaction, the tally of counts, the page, the endpoints,
and `replay --metrics-file`."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionizer.config import ConfigError, build_metrics_settings, parse_config
from sessionizer.core.partition import PartitionStats
from sessionizer.monitoring.health import Health
from sessionizer.monitoring.metrics import JobMetrics, RunMetrics, StatsMark, Tally, new_registry
from sessionizer.monitoring.page import render
from sessionizer.monitoring.redact import MASK, redact
from sessionizer.monitoring.server import Monitor, MonitoringServer
from sessionizer.monitoring.status import PartitionRow, Snapshot, Throughput

ROOT = Path(__file__).resolve().parents[2]
SESSIONIZER = Path(sys.executable).parent / "sessionizer"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_liveness_turns_false_once_the_loop_has_not_moved_for_the_bound():
    clock = Clock()
    health = Health(stuck_after_s=5, clock=clock)
    health.beat("consuming")
    clock.now += 4.9
    assert health.liveness()[0]
    clock.now += 0.2
    live, body = health.liveness()
    assert not live and "has not moved for 5 s (consuming)" in body["why"]
    health.beat()
    assert health.liveness()[0]


def test_readiness_says_why():
    health = Health(60)
    assert health.readiness() == (False, {"ready": False, "why": "starting"})
    health.not_ready("restoring partitions 0,1 from their changelogs")
    assert health.readiness()[1]["why"].startswith("restoring")
    health.set_ready("consuming 2 partition(s)")
    assert health.readiness() == (True, {"ready": True, "why": "consuming 2 partition(s)"})


def test_secrets_are_masked_at_any_depth_and_references_to_them_are_not():
    config = {"sasl.password": "hunter2", "sasl.username": "user", "ssl.key.pem": "-----BEGIN",
              "ssl.key.location": "/etc/key.pem", "oauth_cb": print,
              "auth": {"password_env": "MSK_PASSWORD", "api_secret_file": "/run/secret", "client_secret": "s3"},
              "list": [{"token": "abc"}], "sasl.jaas.config": "x required password=y;"}
    shown = redact(config)
    assert shown["sasl.password"] == MASK and shown["ssl.key.pem"] == MASK and shown["sasl.jaas.config"] == MASK
    assert shown["auth"]["client_secret"] == MASK and shown["list"][0]["token"] == MASK
    assert shown["sasl.username"] == "user" and shown["ssl.key.location"] == "/etc/key.pem"
    assert shown["auth"]["password_env"] == "MSK_PASSWORD" and shown["auth"]["api_secret_file"] == "/run/secret"
    assert shown["oauth_cb"] == "<callback>"
    for secret in ("hunter2", "BEGIN", "s3", "abc", "password=y"):
        assert secret not in orjson.dumps(shown).decode()


def test_a_tally_counts_what_changed_since_the_last_one_only():
    stats, mark = PartitionStats(), StatsMark()
    stats.read, stats.valid, stats.skipped = 10, 7, 1
    stats.dead_letters_by.update({("late", "sessions"): 1, ("invalid_json", "none"): 1})
    first = Tally()
    first.take(3, stats, mark)
    assert (first.read, first.accepted, first.skipped) == (Counter({"3": 10}), Counter({"3": 7}), Counter({"3": 1}))
    assert first.dead_letters == Counter({("late", "sessions"): 1, ("invalid_json", "none"): 1})
    stats.read, stats.valid = 15, 12
    stats.dead_letters_by[("late", "sessions")] += 2
    second = Tally()
    second.take(3, stats, mark)
    assert second.read == Counter({"3": 5}) and second.accepted == Counter({"3": 5})
    assert second.dead_letters == Counter({("late", "sessions"): 2})
    metrics = JobMetrics(new_registry(process=False))
    metrics.apply(first)
    metrics.apply(second)
    assert metrics.registry.get_sample_value("sessionizer_records_read_total", {"partition": "3"}) == 15
    assert metrics.registry.get_sample_value("sessionizer_dead_letters_total",
                                             {"code": "late", "aggregation": "sessions"}) == 3


def test_counts_reach_the_metrics_only_when_their_transaction_commits():
    metrics = RunMetrics(new_registry(process=False))
    tally = Tally()
    tally.read["0"] += 4
    tally.out["xp-session-events"] += 2
    tally.final_since.append(10.0)
    assert metrics.registry.get_sample_value("sessionizer_records_read_total", {"partition": "0"}) is None
    metrics.committed(tally, 0.02, wall=1_800_000_000.0, now=10.5)
    value = metrics.registry.get_sample_value
    assert value("sessionizer_records_read_total", {"partition": "0"}) == 4
    assert value("sessionizer_records_out_total", {"topic": "xp-session-events"}) == 2
    assert value("sessionizer_transactions_total", {"result": "committed"}) == 1
    assert value("sessionizer_transactions_total", {"result": "aborted"}) == 0
    assert value("sessionizer_final_record_commit_delay_seconds_sum", {}) == pytest.approx(0.5)
    assert value("sessionizer_last_commit_timestamp_seconds", {}) == 1_800_000_000.0


def test_names_follow_prometheus_conventions():
    metrics = RunMetrics(new_registry())
    text = _exposition(metrics.registry)
    names = {family.name for family in text_string_to_metric_families(text)}
    ours = {name for name in names if name.startswith("sessionizer_")}
    assert len(ours) > 20
    assert {"process_resident_memory_bytes", "python_gc_objects_collected"} <= names
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            assert all(sample.name.endswith("_total") for sample in family.samples), family.name
        for sample in family.samples:
            assert not {"user_id", "player", "key"} & set(sample.labels), sample


def _exposition(registry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def page_html(**kwargs) -> str:
    snapshot = Snapshot(partitions=(PartitionRow(0, 12, 1_800_000_000_000, 3.5, 4, {"xp-rolling-2min": 7}, 100),
                                    PartitionRow(1, None, -1, None, 0, {}, 0)),
                        transactions={"committed": 3}, dead_letters={"invalid_json": 1})
    clock = Clock()
    throughput = Throughput(step_s=10, clock=clock)
    throughput.sample(0)
    clock.now += 10
    throughput.sample(50)
    letter = orjson.dumps({"error": "invalid_json", "detail": "not JSON: <script>alert(1)</script>",
                           "aggregation": None, "source": {"topic": "in", "partition": 0, "offset": 7}})
    return render("sessionizer run", {"mode": "run", "group": "g"}, (True, {"live": True}),
                  (False, {"ready": False, "why": "restoring partitions 1"}), snapshot, throughput, [letter],
                  {"consumer": redact({"sasl.password": "hunter2"})})


def test_the_page_shows_partitions_dead_letters_and_config_escaped():
    html = page_html()
    assert 'http-equiv="refresh"' in html
    assert html.count("<tr class=partition ") == 2 and "xp-rolling-2min" in html
    assert "2027-01-15 08:00:00" in html  # partition 0's stream time, in UTC
    assert "<code>invalid_json</code>" in html and "topic in, partition 0, offset 7" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "restoring partitions 1" in html and "not ready" in html
    assert "hunter2" not in html and MASK in html


def test_throughput_rates_over_the_last_minutes():
    clock = Clock()
    throughput = Throughput(step_s=10, keep_s=900, clock=clock)
    for total in range(0, 10_000, 1000):
        throughput.sample(total)
        clock.now += 10
    assert throughput.rate_over(60) == pytest.approx(100.0)
    assert len(throughput.rates()) == 9 and all(rate == pytest.approx(100.0) for _, rate in throughput.rates())


@pytest.fixture()
def server():
    registry = new_registry()
    metrics = RunMetrics(registry)
    metrics.records_read.labels("0").inc(5)
    health = Health(60)
    health.set_ready("consuming 1 partition(s)")
    monitor = Monitor("sessionizer run", {"mode": "run"}, health, registry, {"x": {"token": "t0ps3cret"}})
    running = MonitoringServer(monitor, "127.0.0.1", 0)
    yield running, monitor
    running.close()


def get(url: str, accept: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_endpoints(server):
    running, monitor = server
    base = f"http://127.0.0.1:{running.port}"
    status, headers, body = get(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'sessionizer_records_read_total{partition="0"} 5.0' in body.decode()
    status, headers, body = get(base + "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert headers["Content-Type"].startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    assert get(base + "/healthz")[0] == 200
    status, _, body = get(base + "/readyz")
    assert status == 200 and orjson.loads(body) == {"ready": True, "why": "consuming 1 partition(s)"}
    monitor.health.not_ready("restoring partitions 0 from their changelogs")
    status, _, body = get(base + "/readyz")
    assert status == 503 and orjson.loads(body)["why"].startswith("restoring")
    monitor.health.stuck_after_s = 0.0
    status, _, body = get(base + "/healthz")
    assert status == 503 and orjson.loads(body)["live"] is False
    status, headers, body = get(base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"t0ps3cret" not in body
    assert get(base + "/nope")[0] == 404


def test_metrics_settings_are_checked_with_the_key_named():
    assert build_metrics_settings(parse_config({}).metrics) is None
    settings = build_metrics_settings(parse_config({"metrics": {"port": 9400}}).metrics)
    assert (settings.host, settings.port, settings.stuck_after_s) == ("127.0.0.1", 9400, 60.0)
    for table, message in (({"port": 70000}, "metrics.port: 70000 is not a TCP port"),
                           ({"port": 1, "stuck_after": "0s"}, "metrics.stuck_after: must be more than 0"),
                           ({"port": 1, "host": " "}, "metrics.host: empty")):
        with pytest.raises(ConfigError, match=message):
            build_metrics_settings(parse_config({"metrics": table}).metrics)
    with pytest.raises(ConfigError, match="metrics.port: expected an integer, got a string"):
        parse_config({"metrics": {"port": "9400"}})
    with pytest.raises(ConfigError, match="metrics.prot: unknown key"):
        parse_config({"metrics": {"prot": 9400}})


def test_replay_writes_the_same_counters_to_a_metrics_file(tmp_path, core):
    metrics_file = tmp_path / "replay.prom"
    done = subprocess.run([str(SESSIONIZER), "replay", "--no-progress", "--config", str(ROOT / "examples/xtremepush.toml"),
                           "--output-dir", str(tmp_path / "out"), "--metrics-file", str(metrics_file),
                           str(ROOT / "examples/sample-spins.jsonl")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics_file.read_text()) for s in family.samples}
    read = samples[("sessionizer_records_read_total", (("partition", "0"),))]
    accepted = samples[("sessionizer_records_accepted_total", (("partition", "0"),))]
    skipped = samples[("sessionizer_records_skipped_total", (("partition", "0"),))]
    assert f"read {int(read):,}   accepted {int(accepted):,}   skipped by the events filter {int(skipped):,}" \
        in done.stderr
    # Every output line is counted, per topic, and dead letters by code agree with the file's own.
    for path in (tmp_path / "out").glob("*.jsonl"):
        lines = path.read_bytes().splitlines()
        assert samples[("sessionizer_records_out_total", (("topic", path.stem),))] == len(lines)
        if path.stem == "xp-dead-letter":
            letters = [orjson.loads(line) for line in lines]
            by_code = Counter((d["error"], d.get("aggregation") or "none") for d in letters)
            for (code, aggregation), count in by_code.items():
                key = ("sessionizer_dead_letters_total", (("aggregation", aggregation), ("code", code)))
                assert samples[key] == count
            # Records wrong in themselves are read but neither accepted nor skipped.
            assert read - accepted - skipped == sum(n for (_, agg), n in by_code.items() if agg == "none")


def test_a_metrics_file_that_cannot_be_written_names_it_and_keeps_the_output(tmp_path):
    out = tmp_path / "out"
    target = tmp_path / "no-such-dir" / "replay.prom"
    done = subprocess.run([str(SESSIONIZER), "replay", "--no-progress", "--config", str(ROOT / "examples/xtremepush.toml"),
                           "--output-dir", str(out), "--metrics-file", str(target),
                           str(ROOT / "examples/sample-spins.jsonl")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"sessionizer: error: {target}: cannot write the metrics file" in done.stderr
    assert "records out:" in done.stderr  # the summary came first
    plain = tmp_path / "plain"
    subprocess.run([str(SESSIONIZER), "replay", "--no-progress", "--config", str(ROOT / "examples/xtremepush.toml"),
                    "--output-dir", str(plain), str(ROOT / "examples/sample-spins.jsonl")], check=True,
                   capture_output=True, timeout=120)
    for path in plain.iterdir():  # the replay's output is all there, as without --metrics-file
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
