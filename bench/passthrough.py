"""The limit for `make bench-kafka`: a transactional passthrough in Python with confluent-kafka.

It consumes a batch, produces the same bytes to an output topic, and commits a transaction
every commit interval with the input offsets in it: exactly what `sessionizer run` does
around its core, with no core. The same client settings as `sessionizer run` (consumer and
producer) and the same tuning of Python's cyclic collector, so the difference between the two
is the cost of the aggregation itself.

    python passthrough.py BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC GROUP TOTAL_RECORDS

Prints the events/s from process start to the last input offset committed.
"""

from __future__ import annotations

import gc
import sys
import time

STARTED = time.perf_counter()

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

COMMIT_SECONDS = 0.25  # sessionizer's default commit interval
BATCH = 5000  # sessionizer's default batch size


def main() -> None:
    bootstrap, source, target, group, total = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    gc.freeze()  # the cyclic collector as `sessionizer run` tunes it (sessionizer.kafka.runtime.tune_gc)
    gc.set_threshold(50_000, 20, 10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "partition.assignment.strategy": "cooperative-sticky", "fetch.max.bytes": 64 * 1024 * 1024,
                         "max.partition.fetch.bytes": 8 * 1024 * 1024, "enable.partition.eof": False})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{group}-passthrough",
                         "linger.ms": 20, "queue.buffering.max.messages": 1_000_000,
                         "message.max.bytes": 8 * 1024 * 1024, "partitioner": "murmur2_random",
                         "transaction.timeout.ms": 15_000, "enable.idempotence": True})
    producer.init_transactions(30)
    consumer.subscribe([source])
    offsets: dict[int, int] = {}
    copied = 0
    last_commit = time.monotonic()
    producer.begin_transaction()
    while copied < total:
        for message in consumer.consume(num_messages=BATCH, timeout=0.1):
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise SystemExit(message.error().str())
                continue
            while True:
                try:
                    producer.produce(target, message.value(), message.key())
                    break
                except BufferError:
                    producer.poll(0.1)
            offsets[message.partition()] = message.offset() + 1
            copied += 1
        producer.poll(0)
        if time.monotonic() - last_commit >= COMMIT_SECONDS or copied >= total:
            if offsets:
                producer.send_offsets_to_transaction([TopicPartition(source, p, o) for p, o in offsets.items()],
                                                     consumer.consumer_group_metadata(), 30)
                offsets.clear()
            producer.commit_transaction(30)
            producer.begin_transaction()
            last_commit = time.monotonic()
    producer.abort_transaction(30)  # the empty one begun after the last commit
    elapsed = time.perf_counter() - STARTED
    consumer.close()
    print(f"{total / elapsed:.0f}")


if __name__ == "__main__":
    main()
