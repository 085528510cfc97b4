"""What the runtime relies on when it produces a transaction's records with produce_batch."""

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from kit import create_topic


def partitions_by_key(bootstrap: str, topic: str, partitions: int) -> dict[bytes, set[int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "batch-check", "enable.partition.eof": True,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: dict[bytes, set[int]] = {}
    pending, deadline = set(range(partitions)), time.monotonic() + 30
    try:
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    continue
                found.setdefault(message.key(), set()).add(message.partition())
    finally:
        consumer.close()
    assert not pending
    return found


def test_a_batch_puts_each_key_where_a_single_produce_puts_it(bootstrap):
    """Same key, same partition, whichever way a record is produced (the Java clients' murmur2)."""
    for topic in ("batch-keys", "single-keys"):
        create_topic(bootstrap, topic, 6)
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    keys = [f"p{n}" for n in range(300)]
    assert producer.produce_batch("batch-keys", [{"key": key, "value": b"x"} for key in keys]) == len(keys)
    for key in keys:
        producer.produce("single-keys", b"x", key.encode())
    assert producer.flush(30) == 0
    batched, single = partitions_by_key(bootstrap, "batch-keys", 6), partitions_by_key(bootstrap, "single-keys", 6)
    assert batched == single
    assert len(batched) == len(keys) and all(len(found) == 1 for found in batched.values())
    assert len(set().union(*batched.values())) == 6
