"""Reading the group's committed offsets for the start-up state check, without a network."""

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from sessionizer.kafka.topics import committed_offsets


class Reader:
    """Answers `committed` as librdkafka does: one TopicPartition-like answer per partition asked."""

    def __init__(self, answers):
        self.answers = answers

    def committed(self, asked, timeout):
        return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, error=error)
                for tp, (offset, error) in zip(asked, self.answers)]


def test_partitions_with_no_commit_are_left_out():
    found = committed_offsets(Reader([(17, None), (-1001, None)]), "in", 2, 1.0)
    assert {p: tp.offset for p, tp in found.items()} == {0: 17}


def test_a_partition_whose_offset_came_back_with_an_error_is_asked_again_not_read_as_no_commit():
    """CI: a process started while a broker restarted read a partition's failed answer as 'no commit',
    found changelog state for it and refused to start (exit 2) though its offsets were there."""
    reader = Reader([(17, None), (-1001, KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT))])
    with pytest.raises(KafkaException):
        committed_offsets(reader, "in", 2, 1.0)


# -- the orphan check: changelog state for partitions the group has no offsets for ---------------

def _settings():
    import tomllib

    from sessionizer.config import build_run_settings, build_spec, parse_config

    config = parse_config(tomllib.loads('[sessions]\n[kafka]\ninput_topic = "in"\ngroup_id = "g"\n'))
    return build_run_settings(config, build_spec(config, live=True))


def _check(monkeypatch, answers):
    """Run the check on a 2-partition input whose changelog partition 1 holds committed records;
    `answers` are the group's committed offsets, one dict per time they are asked."""
    import sessionizer.kafka.topics as topics

    settings = _settings()
    changelog = settings.changelog_topic("sessions")
    monkeypatch.setattr(topics, "end_offsets", lambda admin, topic, partitions, timeout: {0: 5, 1: 3})
    monkeypatch.setattr(topics, "has_committed_records", lambda reader, topic, partitions, timeout: 1 in partitions)
    asked = iter(answers)
    offset = SimpleNamespace(offset=10, metadata=topics.offsets_metadata(settings), error=None)
    topics._check_state(None, None, settings, 2, {changelog: 2}, [changelog],
                        lambda: {p: offset for p in next(asked)}, 1.0)


def test_state_whose_offsets_were_committed_after_they_were_first_read_is_not_an_orphan(monkeypatch):
    """CI (three processes, kill -9 and a broker restart): a process started while another committed its
    first transaction read the offsets (none for partition 1 yet), then found partition 1's changelog
    records of that transaction, and refused to start (exit 2). The offsets are asked again."""
    _check(monkeypatch, [{0}, {0, 1}])


def test_state_still_without_offsets_when_asked_again_stops_the_start(monkeypatch):
    from sessionizer.kafka.topics import StateMismatch

    with pytest.raises(StateMismatch, match="holds state for input partitions without a committed offset"):
        _check(monkeypatch, [{0}, {0}])
