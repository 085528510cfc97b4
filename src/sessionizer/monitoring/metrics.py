"""The Prometheus metric families of `replay`, `run` and `forward` (prometheus-client).

Conventions: a `sessionizer_` prefix, `_total` counters, base units (seconds, records),
and low-cardinality labels only (partition, aggregation, topic, error code; never a
player id). Each job has a registry of its own, so tests and replay never share state.

The record counters of `run` move when a transaction commits, not when a record is fed:
work that is rewound after a failed transaction is redone, and counting it twice would
make the counters disagree with what Kafka holds. So at each commit the runtime takes a
`Tally` of what changed since the last one and applies it once the commit is confirmed.
"""

from __future__ import annotations

from collections import Counter as Multiset
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, Info, PlatformCollector,
                               ProcessCollector, disable_created_metrics, write_to_textfile)

from ..core.partition import PartitionStats

RECENT_DEAD_LETTERS = 20  # kept for the status page
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def new_registry(process: bool = True) -> CollectorRegistry:
    """A registry of its own; with `process`, the usual process, platform and GC metrics."""
    disable_created_metrics()  # `_created` series double every counter's output for nothing a dashboard uses
    registry = CollectorRegistry(auto_describe=True)
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


@dataclass
class StatsMark:
    """A partition's counts when they were last tallied."""

    read: int = 0
    accepted: int = 0
    skipped: int = 0
    dead_letters: Multiset = field(default_factory=Multiset)


@dataclass
class Tally:
    """What one transaction holds, counted since the previous transaction."""

    read: Multiset = field(default_factory=Multiset)  # by input partition
    accepted: Multiset = field(default_factory=Multiset)
    skipped: Multiset = field(default_factory=Multiset)
    dead_letters: Multiset = field(default_factory=Multiset)  # by (code, aggregation)
    out: Multiset = field(default_factory=Multiset)  # by output topic
    letters: list[bytes] = field(default_factory=list)  # the last dead letters (their values)
    final_since: list[float] = field(default_factory=list)  # per partition: when its oldest final record appeared

    def take(self, partition: int, stats: PartitionStats, mark: StatsMark) -> None:
        """Adds `stats` less `mark` for `partition`, and moves `mark` up to `stats`."""
        label = str(partition)
        self.read[label] += stats.read - mark.read
        self.accepted[label] += stats.valid - mark.accepted
        self.skipped[label] += stats.skipped - mark.skipped
        if stats.dead_letters_by != mark.dead_letters:
            self.dead_letters.update(stats.dead_letters_by - mark.dead_letters)
            mark.dead_letters = stats.dead_letters_by.copy()
        mark.read, mark.accepted, mark.skipped = stats.read, stats.valid, stats.skipped


class JobMetrics:
    """The record counters: the same families for `replay` and `run`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records_read = Counter("sessionizer_records_read", "Input records read (for run: committed as consumed)",
                                    ["partition"], registry=registry)
        self.records_accepted = Counter("sessionizer_records_accepted", "Input records aggregated",
                                        ["partition"], registry=registry)
        self.records_skipped = Counter("sessionizer_records_skipped",
                                       "Input records passed over by the input.events filter", ["partition"],
                                       registry=registry)
        self.dead_letters = Counter("sessionizer_dead_letters",
                                    "Dead letters by error code and aggregation (\"none\": the record itself)",
                                    ["code", "aggregation"], registry=registry)
        self.records_out = Counter("sessionizer_records_out", "Records written (for run: committed) per output topic",
                                   ["topic"], registry=registry)
        # The same figures as plain values, for the status page.
        self.read_totals: Multiset = Multiset()  # by partition
        self.dead_letter_totals: Multiset = Multiset()  # by code

    def apply(self, tally: Tally) -> None:
        for family, counts in ((self.records_read, tally.read), (self.records_accepted, tally.accepted),
                               (self.records_skipped, tally.skipped)):
            for partition, count in counts.items():
                family.labels(partition).inc(count)
        self.read_totals.update(tally.read)
        for (code, aggregation), count in tally.dead_letters.items():
            self.dead_letters.labels(code, aggregation).inc(count)
            self.dead_letter_totals[code] += count
        for topic, count in tally.out.items():
            self.records_out.labels(topic).inc(count)

    def declare(self, partitions: list[int], topics: list[str]) -> None:
        """Series at 0 before anything happens, so rates and alerts have a start."""
        for partition in partitions:
            for family in (self.records_read, self.records_accepted, self.records_skipped):
                family.labels(str(partition))
        for topic in topics:
            self.records_out.labels(topic)


def write_replay_metrics(path: str | Path, stats: PartitionStats, seconds: float) -> None:
    """`replay --metrics-file`: the same record counters, in the text format (partition "0": replay
    is one partition), for a pushgateway or a CI job to read."""
    registry = new_registry(process=False)
    metrics = JobMetrics(registry)
    tally = Tally()
    tally.take(0, stats, StatsMark())
    tally.out.update(stats.out)
    metrics.apply(tally)
    Gauge("sessionizer_replay_duration_seconds", "Wall-clock time of the replay", registry=registry).set(seconds)
    write_to_textfile(str(path), registry)


class RunMetrics(JobMetrics):
    """`sessionizer run`: the record counters plus the runtime's own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        r = registry
        self.info = Info("sessionizer", "This process: version, core, group and input topic", registry=r)
        self.open_sessions = Gauge("sessionizer_open_sessions", "Open sessions", ["partition"], registry=r)
        self.open_windows = Gauge("sessionizer_open_windows", "Open (group, window) pairs of a rolling aggregation",
                                  ["partition", "aggregation"], registry=r)
        self.stream_time = Gauge("sessionizer_stream_time_seconds", "Stream time (event time) of an input partition",
                                 ["partition"], registry=r)
        self.stream_time_behind = Gauge("sessionizer_stream_time_behind_seconds",
                                        "How far an input partition's stream time is behind the wall clock",
                                        ["partition"], registry=r)
        self.consumer_lag = Gauge("sessionizer_consumer_lag_records",
                                  "Records of an input partition not consumed yet (high watermark - position)",
                                  ["partition"], registry=r)
        self.assigned = Gauge("sessionizer_assigned_partitions", "Input partitions this process owns", registry=r)
        self.idle_advances = Counter("sessionizer_idle_advances",
                                     "Stream time moved on by the wall clock for an idle partition", registry=r)
        self.transactions = Counter("sessionizer_transactions",
                                    "Transactions by result: committed, aborted (then rewound), failed (the "
                                    "producer was replaced, then rewound)", ["result"], registry=r)
        self.commit_duration = Histogram("sessionizer_transaction_commit_duration_seconds",
                                         "From the end of a transaction's records to its confirmed commit",
                                         buckets=SECONDS, registry=r)
        self.final_to_commit = Histogram("sessionizer_final_record_commit_delay_seconds",
                                         "From a window's close (stream time reaching it) to the commit holding "
                                         "its record; per transaction and partition, the oldest record",
                                         buckets=SECONDS, registry=r)
        self.last_commit = Gauge("sessionizer_last_commit_timestamp_seconds",
                                 "Wall-clock time of the last committed transaction", registry=r)
        self.commit_interval = Gauge("sessionizer_commit_interval_seconds", "runtime.commit_interval", registry=r)
        self.uncommitted = Gauge("sessionizer_uncommitted_partitions",
                                 "Input partitions with records consumed but not committed yet", registry=r)
        self.restores = Counter("sessionizer_restores", "Restores of partitions from their changelogs", registry=r)
        self.restored_records = Counter("sessionizer_restored_records", "Changelog records read by restores",
                                        registry=r)
        self.restore_duration = Histogram("sessionizer_restore_duration_seconds", "Time to restore assigned partitions",
                                          buckets=SECONDS, registry=r)
        self.rebalances = Counter("sessionizer_rebalances", "Partitions assigned, revoked or lost, by event",
                                  ["event"], registry=r)
        self.producer_queue = Gauge("sessionizer_producer_queue_messages",
                                    "Messages in the producer's local queue, not acknowledged yet", registry=r)
        self.rewinds = Counter("sessionizer_rewinds", "Rewinds to the last commit after a failed transaction",
                               registry=r)
        for result in ("committed", "aborted", "failed"):
            self.transactions.labels(result)
        for event in ("assigned", "revoked", "lost"):
            self.rebalances.labels(event)
        self.recent_dead_letters: deque[bytes] = deque(maxlen=RECENT_DEAD_LETTERS)
        self.transaction_totals: Multiset = Multiset()
        self.last_commit_at: float | None = None
        self.restore_count = 0

    def count_transaction(self, result: str) -> None:
        self.transactions.labels(result).inc()
        self.transaction_totals[result] += 1

    def committed(self, tally: Tally, commit_seconds: float, wall: float, now: float) -> None:
        """A transaction holding `tally` committed at `now` (monotonic) after `commit_seconds`."""
        self.apply(tally)
        self.count_transaction("committed")
        self.last_commit_at = wall
        self.commit_duration.observe(commit_seconds)
        for since in tally.final_since:
            self.final_to_commit.observe(now - since)
        self.last_commit.set(wall)
        self.recent_dead_letters.extend(tally.letters)

    def forget_partition(self, partition: int, aggregations: list[str]) -> None:
        """A revoked or lost partition's gauges go (its counters stay: they only ever grow)."""
        label = str(partition)
        gone = [(gauge, (label,)) for gauge in (self.open_sessions, self.stream_time, self.stream_time_behind,
                                                self.consumer_lag)]
        gone += [(self.open_windows, (label, aggregation)) for aggregation in aggregations]
        for gauge, labels in gone:
            try:
                gauge.remove(*labels)
            except KeyError:  # never set
                pass


class ForwardMetrics:
    """`sessionizer forward`: deliveries to Xtremepush."""

    def __init__(self, registry: CollectorRegistry, target: str) -> None:
        self.registry = registry
        self.target = target
        self.delivered = Counter("sessionizer_forward_delivered_records", "Records Xtremepush acknowledged",
                                 ["target"], registry=registry).labels(target)
        self.retries = Counter("sessionizer_forward_retries", "Delivery attempts retried after a failure",
                               ["target"], registry=registry).labels(target)
        self.rejected = Counter("sessionizer_forward_rejected_records",
                                "Records Xtremepush refused for good (sent to the dead-letter topic)",
                                ["target"], registry=registry).labels(target)
        self.rejected_batches = Counter("sessionizer_forward_rejected_batches",
                                        "Batches with at least one record refused for good", ["target"],
                                        registry=registry).labels(target)
        self.latency = Histogram("sessionizer_forward_delivery_duration_seconds",
                                 "From reading a batch to Xtremepush acknowledging all of it, retries included",
                                 ["target"], buckets=SECONDS, registry=registry).labels(target)
        self.last_delivery = Gauge("sessionizer_forward_last_delivery_timestamp_seconds",
                                   "Wall-clock time of the last acknowledged batch", ["target"],
                                   registry=registry).labels(target)
        self.info = Info("sessionizer", "This process: version, mode and target", registry=registry)
