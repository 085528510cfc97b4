"""The monitoring endpoints with the real things: a real Prometheus scraping `sessionizer run`, the probes
during a restore and a hung commit, and the status page in headless Chromium.

Prometheus, promtool and Chromium are Debian's packages (`make test` installs them when missing); the
SESSIONIZER_PROMETHEUS, SESSIONIZER_PROMTOOL and SESSIONIZER_CHROMIUM variables point at others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from broker import free_port
from kit import ROOT, Job, read_committed

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "sessionizer.json"
ARTIFACTS = ROOT / "artifacts"  # kept after the run (the status page's screenshot)


def tool(variable: str, name: str) -> str:
    found = os.environ.get(variable) or shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                                              else None)
    assert found, f"{name} is not installed: `make test` installs Debian's package, or set {variable}"
    return found


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metrics_of(port: int) -> dict[tuple[str, tuple], float]:
    _, body = get(f"http://127.0.0.1:{port}/metrics")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def with_metrics(port: int, runtime: str = "", stuck_after: str = "60s") -> str:
    """A `[runtime]` body for Job.config, followed by a `[metrics]` table."""
    return f'{runtime}\n\n[metrics]\nport = {port}\nstuck_after = "{stuck_after}"\n'


class Prometheus:
    """A real Prometheus server on loopback, scraping `targets` every second, with our alert rules."""

    def __init__(self, work: Path, targets: list[str]) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        config = work / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "sessionizer", "static_configs": [{"targets": targets}]}],
        }))
        self.log = open(work / "prometheus.log", "wb")
        self.process = subprocess.Popen([tool("SESSIONIZER_PROMETHEUS", "prometheus"), f"--config.file={config}",
                                         f"--storage.tsdb.path={work / 'data'}",
                                         f"--web.listen-address=127.0.0.1:{self.port}"],
                                        stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (work / "prometheus.log").read_text()[-3000:]
            try:
                if get(self.url("/-/ready"), timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("Prometheus did not become ready in 60 s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> dict:
        status, body = get(self.url(path) + ("?" + urllib.parse.urlencode(params) if params else ""))
        answer = orjson.loads(body)
        assert status == 200 and answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("/api/v1/query", query=expr)["result"]

    def scalar_by(self, expr: str, label: str) -> dict[str, float]:
        return {series["metric"].get(label, ""): float(series["value"][1]) for series in self.query(expr)}

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def test_alert_rules_pass_promtool():
    done = subprocess.run([tool("SESSIONIZER_PROMTOOL", "promtool"), "check", "rules", str(ALERTS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_prometheus_scrapes_run_and_its_counts_agree_with_what_kafka_committed(bootstrap, tmp_path):
    from test_run_equals_replay import stream

    job = Job(bootstrap, "prom", 3, tmp_path)
    lines = stream(20_000, 400, seed=41) + [b"{broken", b"[1,2]", b'{"user_id":"x","timestamp":"soon"}']
    port = free_port()
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])
    try:
        run = job.start("p", runtime=with_metrics(port, 'idle_timeout = "off"'))
        job.produce(lines)
        job.wait_until_consumed(180, [run])
        committed = {base: len(read_committed(bootstrap, topic)) for base, topic in job.outputs.items()}
        letters = [orjson.loads(v) for _, v in read_committed(bootstrap, job.outputs["xp-dead-letter"])]
        by_code = Counter(letter["error"] for letter in letters)
        assert by_code["invalid_json"] >= 1 and by_code["not_an_object"] >= 1 and by_code["bad_time"] >= 1

        # Prometheus' view, once it has scraped the last commit.
        deadline = time.monotonic() + 60
        while True:
            read = sum(prometheus.scalar_by("sum(sessionizer_records_read_total)", "").values())
            out = prometheus.scalar_by("sum by (topic) (sessionizer_records_out_total)", "topic")
            codes = prometheus.scalar_by("sum by (code) (sessionizer_dead_letters_total)", "code")
            want_out = {job.outputs[base]: float(n) for base, n in committed.items()}
            if read == len(lines) and out == want_out and codes == {k: float(v) for k, v in by_code.items()}:
                break
            assert time.monotonic() < deadline, (read, len(lines), out, want_out, codes, by_code)
            time.sleep(1)
        per_partition = prometheus.scalar_by("sessionizer_records_read_total", "partition")
        assert sorted(per_partition) == ["0", "1", "2"] and all(n > 0 for n in per_partition.values())
        assert prometheus.scalar_by("sessionizer_ready", "") == {"": 1.0}
        assert prometheus.query('sessionizer_transactions_total{result="committed"} > 0')
        assert prometheus.query("process_resident_memory_bytes > 0")

        # Every alert rule: loaded, evaluated by Prometheus itself without error, and once more through the
        # query API; every sessionizer metric a `run` rule names exists in what Prometheus scraped.
        names = set(prometheus.api("/api/v1/label/__name__/values"))
        groups = prometheus.api("/api/v1/rules")["groups"]
        rules = [(group["name"], rule) for group in groups for rule in group["rules"]]
        assert len(rules) == ALERTS.read_text().count("- alert:")
        deadline = time.monotonic() + 30
        while any(rule.get("health") != "ok" for _, rule in rules):
            assert time.monotonic() < deadline, [(r["name"], r.get("health"), r.get("lastError")) for _, r in rules]
            time.sleep(1)
            groups = prometheus.api("/api/v1/rules")["groups"]
            rules = [(group["name"], rule) for group in groups for rule in group["rules"]]
        for group, rule in rules:
            prometheus.query(rule["query"])  # asserts success
            if group == "sessionizer-run":
                for name in set(re.findall(r"sessionizer_[a-z_]+", rule["query"])):
                    assert name in names, (rule["name"], name)
        # The Grafana dashboard: every query evaluates, and every `run` panel's metrics exist.
        dashboard = orjson.loads(DASHBOARD.read_bytes())
        forward_row = next(p["gridPos"]["y"] for p in dashboard["panels"] if p["type"] == "row" and "forward" in p["title"])
        queries = [(p["gridPos"]["y"] < forward_row, t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
        assert len(queries) > 20
        for is_run, expr in queries:
            prometheus.query(expr.replace("$job", ".*").replace("$instance", ".*"))
            if is_run:
                for name in set(re.findall(r"sessionizer_[a-z_]+", expr)):
                    assert name.removesuffix("_bucket") in names or name in names, (expr, name)
        assert run.stop() == 0
    finally:
        prometheus.close()


class ReadyzWatcher(threading.Thread):
    """Polls /readyz every 10 ms, keeping each change of (status, why)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.seen, self.done = port, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                status, body = get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                state = (status, orjson.loads(body)["why"])
            except OSError:
                state = (0, "not listening")
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)
            time.sleep(0.01)


def test_readyz_is_503_while_100k_open_sessions_are_restored_and_200_after(bootstrap, tmp_path):
    base = tmp_path / "sessions-only.toml"
    base.write_text('[sessions]\ntopic = "xp-session-events"\ngap = "10m"\n')
    job = Job(bootstrap, "ready", 2, tmp_path, base=base)
    start = 1_800_000_000_000
    lines = [orjson.dumps({"event": "spin", "user_id": f"r{n:06d}", "timestamp": start + n % 60_000,
                           "value": {"stake": 1, "win": 0}}) for n in range(100_000)]
    port = free_port()
    runtime = with_metrics(port, 'idle_timeout = "off"')
    run = job.start("r", runtime=runtime)
    job.produce(lines)
    job.wait_until_consumed(180, [run])
    time.sleep(1)
    run.kill()

    watcher = ReadyzWatcher(port)
    watcher.start()
    restarted = job.start("r", runtime=runtime)
    try:
        deadline = time.monotonic() + 120
        while not (watcher.seen and watcher.seen[-1][0] == 200):
            assert restarted.alive() and time.monotonic() < deadline, (watcher.seen, restarted.log_text()[-3000:])
            time.sleep(0.05)
        watcher.done.set()
        restoring = [i for i, (status, why) in enumerate(watcher.seen) if status == 503 and why.startswith("restoring")]
        assert restoring, watcher.seen
        assert all(status != 200 for status, _ in watcher.seen[:restoring[0]])
        assert watcher.seen[-1] == (200, "consuming 2 partition(s)")
        samples = metrics_of(port)
        assert samples[("sessionizer_restored_records_total", ())] >= 100_000
        assert samples[("sessionizer_restores_total", ())] >= 1
        deadline = time.monotonic() + 10  # gauges are brought up to date about once a second
        while sum(v for (name, _), v in metrics_of(port).items() if name == "sessionizer_open_sessions") != 100_000:
            assert time.monotonic() < deadline, metrics_of(port)
            time.sleep(0.2)
        assert "open_windows=100000" in restarted.log_text()
        assert restarted.stop() == 0
    finally:
        watcher.done.set()


def test_healthz_turns_503_while_a_commit_hangs_and_200_when_it_returns(bootstrap, tmp_path, monkeypatch):
    from sessionizer.config import load_run_settings
    from sessionizer.kafka import runtime as runtime_module
    from test_run_equals_replay import assert_same_as_replay, stream, with_sentinels

    job = Job(bootstrap, "hang", 2, tmp_path)
    lines, chosen = with_sentinels(job, stream(30_000, 300, seed=43))
    half = len(lines) // 2
    per_partition = job.produce(lines[:half], chosen[:half])
    port = free_port()
    stop = threading.Event()
    runtime = runtime_module.Runtime(load_run_settings(job.config(
        "h", runtime=with_metrics(port, 'idle_timeout = "off"', stuck_after="2s"))), stop=stop)
    hang, release = threading.Event(), threading.Event()

    class HangsWhenAsked:
        """The real producer, except that commit_transaction waits for `release` once `hang` is set."""

        def __init__(self, real):
            self.real = real

        def commit_transaction(self, *args):
            if hang.is_set():
                release.wait()
            return self.real.commit_transaction(*args)

        def __getattr__(self, name):
            return getattr(self.real, name)

        def __len__(self):
            return len(self.real)

    new_producer = runtime._new_producer
    monkeypatch.setattr(runtime, "_new_producer", lambda: HangsWhenAsked(new_producer()))
    worker = threading.Thread(target=runtime.run, daemon=True)
    worker.start()
    try:
        job.wait_until_consumed(120)
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        hang.set()
        for partition, records in enumerate(job.produce(lines[half:], chosen[half:])):
            per_partition[partition].extend(records)
        deadline = time.monotonic() + 60
        while (health := get(f"http://127.0.0.1:{port}/healthz"))[0] != 503:
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        body = orjson.loads(health[1])
        assert body["live"] is False and "has not moved for" in body["why"]
        hang.clear()
        release.set()
        deadline = time.monotonic() + 30
        while get(f"http://127.0.0.1:{port}/healthz")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        job.wait_until_consumed(120)
    finally:
        release.set()
        stop.set()
        worker.join(60)
    assert_same_as_replay(job, per_partition)


class TextOf(HTMLParser):
    """The text a person sees in a page (what is in <style> and <title> left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("style", "script", "title")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "script", "title")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    return subprocess.run([tool("SESSIONIZER_CHROMIUM", "chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           *args], capture_output=True, timeout=120)


def test_the_status_page_in_headless_chromium_shows_partitions_and_dead_letters_and_no_secret(auth_broker, tmp_path):
    """A run on the SCRAM listener (its password from the environment), with a broken record in its input."""
    from authkit import SCRAM_USERS
    from test_platforms import kafka_auth, profile_config, spins

    user, password = next(iter(SCRAM_USERS.items()))
    job = Job(auth_broker.plaintext, "page", 2, tmp_path)
    job.produce(spins() + [b'{"event":"spin","user_id":"u1","timestamp":"yesterday"}', b"{not json"])
    port = free_port()
    config = profile_config(auth_broker, job, "SASL_SCRAM", kafka_auth(
        "msk-scram", 'username_env = "MSK_USER"\npassword_env = "MSK_PASSWORD"'),
        runtime=with_metrics(port, 'idle_timeout = "off"'))
    from kit import Run

    run = Run(config, tmp_path / "page.log", env={**os.environ, "MSK_USER": user, "MSK_PASSWORD": password})
    try:
        job.wait_until_consumed(90, [run])
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30  # until the page's snapshot has caught up with the last commit
        while b"bad_time" not in get(url)[1] or b"not JSON" not in get(url)[1]:
            assert time.monotonic() < deadline, get(url)[1][-2000:]
            time.sleep(0.5)
        dom = chromium(tmp_path, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout.decode()
        reader = TextOf()
        reader.feed(html)
        text = " ".join(" ".join(reader.parts).split())
        assert re.search(r"partition lag \(records\) stream time \(UTC\)", text), text[:2000]
        assert len(re.findall(r'<tr class="partition"', html)) == 2
        assert "ready consuming 2 partition(s)" in text
        assert "bad_time" in text and "invalid_json" in text and "not JSON" in text
        assert f"topic {job.input_topic}, partition" in text
        assert '"sasl.password": "***"' in html.replace("&quot;", '"')
        assert '"password_env": "MSK_PASSWORD"' in html.replace("&quot;", '"')
        assert password not in html and password not in get(url)[1].decode()

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "status-page.png"
        shot = chromium(tmp_path, "--window-size=1280,1600", f"--screenshot={screenshot}", url)
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
        assert run.stop() == 0
    finally:
        if run.alive():
            run.kill()
    assert password not in run.log_text()


def test_forward_metrics_count_deliveries_retries_and_rejections(bootstrap, tmp_path):
    from test_forward import FlakyXtremepush, forward_config, publish, final_records, start_forward, wait_forwarded

    named = publish(bootstrap, "fm", final_records(600, reject_every=299))
    total = sum(len(pairs) for pairs in named.values())
    server = FlakyXtremepush()
    port = free_port()
    config = forward_config(tmp_path, bootstrap, "fm", f"""
kind = "http"
url = "{server.url}"
app_token_env = "XP_TOKEN"
max_batch = 100
timeout = "1s"
max_retry_delay = "1s"
""")
    config.write_text(config.read_text() + f"\n[metrics]\nport = {port}\n")
    log = tmp_path / "forward.log"
    process = start_forward(config, log, {"XP_TOKEN": "xp-app-token"})
    try:
        wait_forwarded(bootstrap, "fm-forward", list(named), process, timeout=300)
        deadline = time.monotonic() + 30
        while True:
            samples = metrics_of(port)
            delivered = samples[("sessionizer_forward_delivered_records_total", (("target", "http"),))]
            rejected = samples[("sessionizer_forward_rejected_records_total", (("target", "http"),))]
            if delivered + rejected == total:
                break
            assert time.monotonic() < deadline, (delivered, rejected, total)
            time.sleep(0.5)
        letters = read_committed(bootstrap, "fm-dead-letter")
        assert rejected == len(letters) > 0
        assert samples[("sessionizer_forward_rejected_batches_total", (("target", "http"),))] >= 1
        assert samples[("sessionizer_forward_retries_total", (("target", "http"),))] >= 1  # the server's 429s and 500s
        assert samples[("sessionizer_forward_delivery_duration_seconds_count", (("target", "http"),))] >= total / 100
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, body = get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"sessionizer forward" in body
        assert b"rejected_by_xtremepush" in body and b"xp-app-token" not in body
        # Every metric the forward alert rules name is one this process exports.
        names = {name for name, _ in samples}
        rules = ALERTS.read_text().split("name: sessionizer-forward")[1]
        for name in set(re.findall(r"sessionizer_[a-z_]+", rules)):
            assert name in names, name
    finally:
        process.terminate()
        process.wait(60)
        server.server.shutdown()
