"""A run of Kafka messages into a core in one call, as the runtime feeds them.

The messages are stand-ins with confluent-kafka's Message methods (tests/kafka feeds
real ones from the broker); the run must stop exactly where the runtime takes over.
"""

from dataclasses import dataclass

from helpers import line, spec
from sessionizer.core.events import InputFields
from sessionizer.core.native import new_partition
from sessionizer.core.sessions import SessionRules
from sessionizer.core.windows import WindowRules


@dataclass
class Message:
    _value: bytes | None
    _partition: int = 0
    _offset: int = 0
    _timestamp: int = 0
    _error: object = None

    def value(self):
        return self._value

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def timestamp(self):
        return (1, self._timestamp) if self._timestamp else (0, -1)

    def error(self):
        return self._error


def job(**fields):
    return spec(SessionRules(gap=10), WindowRules(size=10, advance=10), fields=InputFields(**fields))


def one_by_one(part, messages, with_timestamp):
    for message in messages:
        part.feed(message.value(), message, message.timestamp()[1] if with_timestamp and message.timestamp()[0] else None)
    part.end_of_input()
    return part.drain()


def test_a_run_gives_what_feeding_one_by_one_gives():
    raws = [line("a", 1, stake="1"), b"not json", line("a", 30, stake="2.5"), None, line("a", 2),
            line("b", 31, game="g"), b'{"user_id": "c"}', line("b", 45)]
    messages = [Message(raw, 0, offset) for offset, raw in enumerate(raws)]
    part = new_partition(job(), describe_source=lambda m: {"offset": m.offset()})
    assert part.feed_messages(messages, 0, 0, 0, False) == (len(raws), len(raws), len(raws))
    part.end_of_input()
    expected = one_by_one(new_partition(job(), describe_source=lambda m: {"offset": m.offset()}), messages, False)
    assert part.drain() == expected
    assert {o.topic for o in expected} == {"sessions-out", "rolling0", "xp-dead-letter"}


def test_a_run_stops_at_another_partition_an_error_or_an_offset_already_fed():
    part = new_partition(job())
    messages = [Message(line("a", 1), 0, 5), Message(line("a", 2), 0, 6), Message(line("a", 3), 1, 0)]
    assert part.feed_messages(messages, 0, 0, 5, False) == (2, 7, 2)
    assert part.feed_messages([Message(None, 0, 7, _error="EOF")], 0, 0, 7, False) == (0, 7, 0)
    assert part.feed_messages([Message(line("a", 4), 0, 6)], 0, 0, 7, False) == (0, 7, 0)
    assert part.stats.read == 2


def test_the_kafka_timestamp_is_the_event_time_only_when_asked_for():
    messages = [Message(b'{"user_id": "a"}', 0, 0, _timestamp=100), Message(b'{"user_id": "a"}', 0, 1, _timestamp=104)]
    part = new_partition(job(time="@timestamp"))
    part.feed_messages(messages, 0, 0, 0, True)
    part.end_of_input()
    assert part.drain() == one_by_one(new_partition(job(time="@timestamp")), messages, True)
    assert part.stats.valid == 2


def test_a_run_of_records_with_ids_read_ahead_stops_where_one_by_one_would():
    """A job with ids decodes messages a few at a time ahead of taking them (warming its id registry):
    a run still stops at the first message of another partition, and its copies, junk and a null
    value (in and across those batches) come out as one by one."""
    raws = [line("a", n, stake="1", tx=f"t{n % 13}") for n in range(30)]
    raws[4], raws[9], raws[17] = b"not json", None, raws[16]  # junk and a null mid-batch; a copy
    messages = [Message(raw, 0, 5 + offset) for offset, raw in enumerate(raws)]
    messages.append(Message(line("a", 40, tx="t40"), 1, 0))

    def fed(part):
        return part.feed_messages(messages, 0, 0, 5, False)

    part = new_partition(job(id="tx"), describe_source=lambda m: {"offset": m.offset()})
    assert fed(part) == (30, 35, 30)
    part.end_of_input()
    expected = one_by_one(new_partition(job(id="tx"), describe_source=lambda m: {"offset": m.offset()}), messages[:30], False)
    assert part.drain() == expected
    assert sum(o.topic == "xp-dead-letter" for o in expected) >= 3  # junk, null, and the copies of t0..t3
    assert part.feed_messages([messages[2], messages[3]], 0, 0, 35, False) == (0, 35, 0)  # offsets already fed
