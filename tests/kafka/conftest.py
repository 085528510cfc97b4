"""A real Apache Kafka broker (KRaft, from Maven Central jars) for the whole test session."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "kafka"))
sys.path.insert(0, str(Path(__file__).parent))

from broker import Broker  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kafka" in str(item.fspath):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(autouse=True)
def no_leftover_processes():
    from kit import Run

    yield
    for run in Run.started:
        if run.alive():
            run.kill()
    Run.started.clear()


@pytest.fixture(scope="session")
def broker():
    with Broker() as running:
        yield running


@pytest.fixture(scope="session")
def bootstrap(broker):
    return broker.bootstrap


@pytest.fixture(scope="session")
def auth_broker(tmp_path_factory):
    """A second broker, with the managed platforms' listeners (see authkit.py)."""
    from authkit import AuthBroker

    running = AuthBroker(tmp_path_factory.mktemp("auth")).start()
    yield running
    running.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A 3-node cluster with the managed services' replication settings (see tools/kafka/cluster.py)."""
    from cluster import Cluster

    running = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield running
    running.close(graceful=False)
