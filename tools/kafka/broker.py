"""A real single-node Apache Kafka broker (KRaft, no ZooKeeper) on loopback, from Maven Central jars.

Used by the tests (as a library), `make kafka` and `make demo` (as a command).
The jars come from `make kafka-jars` (tools/kafka/pom.xml -> .cache/kafka/libs).

    python tools/kafka/broker.py [--port 9092]      # runs until Ctrl-C

Each start formats a fresh storage directory unless one is given to reuse
(a broker restarted on the same directory keeps its topics and offsets).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBS = ROOT / ".cache" / "kafka" / "libs"

LOG4J2 = """\
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{extra_listeners}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}{extra_advertised}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{extra_protocols}
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
message.max.bytes=4194304
transaction.max.timeout.ms=900000
{extra}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """One broker process. `start()` formats (if new) and waits until the client port accepts."""

    def __init__(self, work_dir: Path | None = None, port: int | None = None, heap: str = "512m",
                 extra_properties: str = "", listeners: dict[str, tuple[str, int]] | None = None) -> None:
        if not (LIBS / ".fetched").exists() and not any(LIBS.glob("kafka_2.13-*.jar")):
            raise RuntimeError(f"no Kafka jars in {LIBS}: run `make kafka-jars`")
        self.owns_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="sessionizer-kafka-"))
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        self.extra_properties = extra_properties
        self.listeners = listeners or {}  # name -> (security protocol, port)
        self.process: subprocess.Popen | None = None
        self.log_path = self.work_dir / "broker.log"
        self.cluster_id: str | None = None  # formatted with a fresh one unless set (the nodes of one cluster share it)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, *args: str) -> list[str]:
        opts = [f"-Xms64m", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}"]
        return ["java", *opts, "-cp", f"{LIBS}/*", *args]

    def _write_config(self) -> Path:
        data = self.work_dir / "data"
        extra_listeners = "".join(f",{name}://127.0.0.1:{port}" for name, (_, port) in self.listeners.items())
        extra_protocols = "".join(f",{name}:{proto}" for name, (proto, _) in self.listeners.items())
        (self.work_dir / "log4j2.properties").write_text(LOG4J2)
        path = self.work_dir / "server.properties"
        path.write_text(SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.controller_port, data=data, extra=self.extra_properties,
            extra_listeners=extra_listeners, extra_advertised=extra_listeners, extra_protocols=extra_protocols))
        return path

    def start(self, timeout: float = 60.0, format_args: tuple[str, ...] = ()) -> "Broker":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.work_dir / "data" / "meta.properties").exists():
            cluster_id = self.cluster_id or _cluster_id()
            formatted = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                                                  "-c", str(config), *format_args),
                                       capture_output=True, text=True)
            if formatted.returncode != 0:
                raise RuntimeError(f"formatting Kafka storage failed:\n{formatted.stdout}\n{formatted.stderr}")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=log, stderr=log,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the broker did not open {self.bootstrap} in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.stop()
        if self.owns_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


def _cluster_id() -> str:
    while True:  # a leading '-' would read as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local single-node Kafka broker (KRaft) on loopback.")
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--dir", type=Path, default=None, help="storage directory to keep (default: a temp dir)")
    args = parser.parse_args()
    broker = Broker(args.dir, args.port)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker.start()
    print(f"Kafka {_version()} is up at {broker.bootstrap} (data in {broker.work_dir}); Ctrl-C stops it.",
          flush=True)
    while not stop and broker.process is not None and broker.process.poll() is None:
        time.sleep(0.5)
    broker.close()


def _version() -> str:
    jars = sorted(LIBS.glob("kafka_2.13-*.jar"))
    return jars[0].stem.removeprefix("kafka_2.13-") if jars else "?"


if __name__ == "__main__":
    sys.exit(main())
