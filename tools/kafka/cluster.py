"""A real 3-node Apache Kafka cluster (KRaft, each node broker and controller) on loopback.

Set up the way Confluent Cloud, Amazon MSK and Google's Managed Kafka run theirs: replication
factor 3 everywhere (topics, consumer offsets, transaction state), `min.insync.replicas=2`, no
unclean leader election. Used by the fault tests (as a library) and `make kafka-cluster`:

    python tools/kafka/cluster.py            # runs until Ctrl-C

A node can be restarted gracefully (SIGTERM, then it rejoins and every partition is back to a
full ISR), killed (SIGKILL) or paused (SIGSTOP / SIGCONT); its storage outlives each of those.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from broker import Broker, _cluster_id, _version, free_port

CLUSTER_PROPERTIES = """\
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
controlled.shutdown.enable=true
"""


class Node(Broker):
    """One node of the cluster: the single broker's settings, with the cluster's quorum and replication."""

    def __init__(self, work_dir: Path, node_id: int, ports: list[tuple[int, int]], heap: str) -> None:
        super().__init__(work_dir, ports[node_id - 1][0], heap=heap)
        self.node_id = node_id
        self.controller_port = ports[node_id - 1][1]
        self.voters = ",".join(f"{n + 1}@127.0.0.1:{cport}" for n, (_, cport) in enumerate(ports))

    def _write_config(self) -> Path:
        path = super()._write_config()
        lines = []
        for line in path.read_text().splitlines():
            name = line.split("=", 1)[0]
            if name == "node.id":
                line = f"node.id={self.node_id}"
            elif name == "controller.quorum.voters":
                line = f"controller.quorum.voters={self.voters}"
            elif name + "=" in CLUSTER_PROPERTIES:
                continue  # the single broker's value, replaced below
            lines.append(line)
        path.write_text("\n".join(lines) + "\n" + CLUSTER_PROPERTIES)
        return path


class Cluster:
    """Three nodes with one cluster id. `start()` returns once every node takes clients."""

    def __init__(self, work_dir: Path | None = None, heap: str = "384m") -> None:
        self.owns_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="sessionizer-cluster-"))
        ports = [(free_port(), free_port()) for _ in range(3)]
        self.nodes = [Node(self.work_dir / f"node-{n}", n, ports, heap) for n in (1, 2, 3)]
        cluster_id = _cluster_id()
        for node in self.nodes:
            node.cluster_id = cluster_id

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 120.0) -> "Cluster":
        self._start_all(timeout)
        self.wait_until_registered(timeout)
        return self

    def _start_all(self, timeout: float) -> None:
        # A node's client port opens only once the quorum has a majority: start all before waiting on any.
        errors: list[BaseException] = []

        def start_one(node: Node) -> None:
            try:
                node.start(timeout)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=start_one, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.close()
            raise errors[0]

    def wait_until_registered(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                brokers = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=5).brokers
                if len(brokers) == 3:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the cluster did not register 3 brokers in {timeout:.0f} s")

    def wait_until_fully_replicated(self, timeout: float = 120.0) -> None:
        """Until every partition of every topic has all 3 replicas in sync (a node is back for good)."""
        deadline = time.monotonic() + timeout
        lagging: list[str] = []
        while time.monotonic() < deadline:
            try:
                metadata = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=5)
                lagging = [f"{name}/{p}" for name, topic in metadata.topics.items()
                           for p, partition in topic.partitions.items()
                           if len(partition.isrs) < len(partition.replicas) or partition.leader < 0]
                if len(metadata.brokers) == 3 and not lagging:
                    return
            except Exception:  # noqa: BLE001 - a node may still be starting
                lagging = ["(metadata)"]
            time.sleep(0.5)
        raise RuntimeError(f"not fully replicated in {timeout:.0f} s: {lagging[:10]}")

    # -- faults ------------------------------------------------------------------------------

    def restart(self, node_id: int, timeout: float = 120.0) -> float:
        """SIGTERM (controlled shutdown), start again, wait for a full ISR: seconds it took."""
        started = time.monotonic()
        node = self.node(node_id)
        node.stop(timeout)
        node.start(timeout)
        self.wait_until_fully_replicated(timeout)
        return time.monotonic() - started

    def kill(self, node_id: int) -> None:
        node = self.node(node_id)
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()

    def revive(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a killed node again on its storage, and wait for a full ISR."""
        self.node(node_id).start(timeout)
        self.wait_until_fully_replicated(timeout)

    def kill_all(self) -> None:
        """The whole cluster down at once (SIGKILL every node)."""
        for node in self.nodes:
            self.kill(node.node_id)

    def start_all(self, timeout: float = 120.0) -> None:
        """Every node again on its storage, and wait for a full ISR."""
        self._start_all(timeout)
        self.wait_until_fully_replicated(timeout)

    def pause(self, node_id: int) -> None:
        self.node(node_id).process.send_signal(signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self.node(node_id).process.send_signal(signal.SIGCONT)

    def close(self, graceful: bool = True) -> None:
        """Stop every node: one by one with SIGTERM, or (graceful=False: its storage is thrown away
        anyway) SIGKILL at once; the last nodes of a graceful stop wait out a lost quorum."""
        if not graceful:
            self.kill_all()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)  # a paused JVM cannot act on SIGTERM
            node.stop(20)
        if self.owns_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local 3-node Kafka cluster (KRaft) on loopback.")
    parser.add_argument("--dir", type=Path, default=None, help="storage directory (default: a temp dir)")
    args = parser.parse_args()
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster = Cluster(args.dir).start()
    print(f"Kafka {_version()}: 3 nodes up at {cluster.bootstrap} (replication factor 3, min ISR 2; "
          f"data in {cluster.work_dir}); Ctrl-C stops them.", flush=True)
    while not stop:
        time.sleep(0.5)
    cluster.close()


if __name__ == "__main__":
    sys.exit(main())
