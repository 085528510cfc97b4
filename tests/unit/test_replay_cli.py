"""`sessionizer replay` as a user runs it: a subprocess, files in, files out, exit codes."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sessionizer.config import load_config
from sessionizer.core.partition import Partition

ROOT = Path(__file__).parents[2]
EXAMPLE_CONFIG = ROOT / "examples" / "xtremepush.toml"
SAMPLE = ROOT / "examples" / "sample-spins.jsonl"
SESSIONIZER = Path(sys.executable).parent / "sessionizer"
TOPICS = ["xp-session-events", "xp-rolling-2min", "xp-rolling-5min-game", "xp-dead-letter"]

SIMPLE_CONFIG = """
[sessions]
topic = "sessions"
gap = 10
[[rolling]]
topic = "rolling"
size = 100
"""


def replay(*args, stdin=None, cwd=None, env=None):
    return subprocess.run([str(SESSIONIZER), "replay", *map(str, args)], input=stdin, capture_output=True,
                          timeout=120, cwd=cwd, env=env)


def read_topic(out_dir: Path, topic: str) -> list[dict]:
    return [orjson.loads(line) for line in (out_dir / f"{topic}.jsonl").read_bytes().splitlines()]


@pytest.fixture
def simple_config(tmp_path):
    path = tmp_path / "simple.toml"
    path.write_text(SIMPLE_CONFIG)
    return path


def test_replay_of_the_bundled_sample(tmp_path):
    done = replay("--config", EXAMPLE_CONFIG, "--output-dir", tmp_path / "out", SAMPLE)
    assert done.returncode == 0, done.stderr.decode()
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    # The same records as the core produces in this process.
    part = Partition(load_config(EXAMPLE_CONFIG), describe_source=lambda s: {"file": str(SAMPLE), "line": s})
    for n, raw in enumerate(SAMPLE.read_bytes().splitlines(), 1):
        if raw.strip():
            part.feed(raw, n)
    part.end_of_input()
    expected = {topic: [] for topic in TOPICS}
    for out in part.drain():
        expected[out.topic].append(orjson.loads(out.value))
    for topic in TOPICS:
        assert read_topic(tmp_path / "out", topic) == expected[topic]
        assert f"{len(expected[topic]):>9,}  {topic}" in stderr
    sessions = read_topic(tmp_path / "out", "xp-session-events")
    assert len(sessions) > 100
    assert {s["value"]["close_reason"] for s in sessions} >= {"inactivity", "end_of_input"}
    letters = read_topic(tmp_path / "out", "xp-dead-letter")
    assert {d["error"] for d in letters} >= {"invalid_json", "late", "bad_amount"}
    assert all(d["source"]["file"] == str(SAMPLE) for d in letters)
    assert f"read {part.stats.read:,}" in stderr and "events/s" in stderr
    assert f"skipped by the events filter {part.stats.skipped:,}" in stderr


def test_replay_of_many_batches_equals_the_core_in_one_go(tmp_path):
    """More records than one write batch: every final record reaches its file, in order."""
    from sessionizer.replay import CHUNK_BYTES
    from sessionizer.sample import SampleShape, generate

    lines = list(generate(SampleShape(events=CHUNK_BYTES // 50, players=200, malformed_share=0.01, late_share=0.01)))
    data = tmp_path / "many.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    assert data.stat().st_size > 2 * CHUNK_BYTES
    done = replay("--config", EXAMPLE_CONFIG, "--output-dir", tmp_path / "out", data)
    assert done.returncode == 0, done.stderr.decode()
    part = Partition(load_config(EXAMPLE_CONFIG), describe_source=lambda s: {"file": str(data), "line": s})
    for n, raw in enumerate(lines, 1):
        part.feed(raw, n)
    part.end_of_input()
    expected = part.drain_by_topic()
    for topic in TOPICS:
        got = (tmp_path / "out" / f"{topic}.jsonl").read_bytes().splitlines()
        assert got == [value for _, value in expected.get(topic, [])]
    assert len(expected["xp-session-events"]) > 250


@pytest.mark.parametrize("tail", [b"", b'{"last":"line without an end"}'])
def test_input_chunks_are_whole_lines_even_past_the_buffer(monkeypatch, tail):
    """The reused read buffer: every chunk ends at a line end, a line longer than the buffer
    makes it grow, and the last line may have no end; together they are the input, byte for byte."""
    import io

    from sessionizer import replay as replay_module

    monkeypatch.setattr(replay_module, "CHUNK_BYTES", 64)
    lines = [b'{"n":%d}' % n for n in range(40)] + [b'{"long":"' + b"x" * 500 + b'"}'] + [b'{"n":1}'] * 5
    data = b"\n".join(lines) + b"\n" + tail
    seen = []
    for text, stop in replay_module._chunks(io.BytesIO(data), "in.jsonl"):
        chunk = bytes(text[:stop])
        assert chunk.endswith(b"\n") or chunk == tail
        seen.append(chunk)
    assert b"".join(seen) == data
    assert len(seen) > 3


def test_every_topic_gets_a_file_even_when_empty(tmp_path, simple_config):
    data = tmp_path / "in.jsonl"
    data.write_text('{"user_id":"a","timestamp":1}\n')
    assert replay("--config", simple_config, "--output-dir", tmp_path / "o", data).returncode == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "rolling.jsonl", "sessions.jsonl", "xp-dead-letter.jsonl"]
    assert (tmp_path / "o" / "xp-dead-letter.jsonl").read_bytes() == b""


def test_files_in_order_as_one_partition_with_gz_stdin_blank_lines_and_line_numbers(tmp_path, simple_config):
    first = tmp_path / "a.jsonl"
    first.write_text('{"user_id":"a","timestamp":1}\n\n   \n{"user_id":"a","timestamp":5}\r\n')
    second = tmp_path / "b.jsonl.gz"
    with gzip.open(second, "wt") as f:
        f.write('{"user_id":"a","timestamp":200}\nbroken\n')
    third = b'{"user_id":"a","timestamp":7}\n'  # on stdin; late (stream time is 200 by then)
    done = replay("--config", simple_config, "--output-dir", tmp_path / "o", first, second, "-", stdin=third)
    assert done.returncode == 0, done.stderr
    sessions = read_topic(tmp_path / "o", "sessions")
    assert [(s["value"]["session_start_ms"], s["value"]["event_count"]) for s in sessions] == [(1, 2), (200, 1)]
    letters = read_topic(tmp_path / "o", "xp-dead-letter")
    assert [(d["error"], d["source"]) for d in letters] == [
        ("invalid_json", {"file": str(second), "line": 2}),
        ("late", {"file": "<stdin>", "line": 1}),
        ("late", {"file": "<stdin>", "line": 1}),
    ]


def test_hostile_input_becomes_dead_letters_and_exit_0(tmp_path, simple_config):
    hostile = [
        bytes(range(256)).replace(b"\n", b""),  # binary
        b'{"user_id":"\xc3\x28","timestamp":1}',  # invalid UTF-8
        b'{"user_id":"a","timestamp":1,"value":{"stake":1.',  # truncated
        b'{"user_id":"a","timestamp":1,"value":{"stake":1e999999}}',  # huge number
        b'{"user_id":"a","timestamp":1,"value":{"stake":' + b"9" * 100_000 + b"}}",  # huge integer
        b'{"user_id":"a","timestamp":1,"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}",  # 10,000 levels
        b'{"user_id":"a","timestamp":1,"x":"' + b"y" * 1_000_000 + b'"}',  # a 1 MB line (valid)
        b'{"user_id":"a","timestamp":1,"x":"' + b"y" * 1_000_000,  # a 1 MB line (truncated)
        b"[" * 10_000,
        b'{"user_id":"a","timestamp":2}',
    ]
    data = tmp_path / "hostile.jsonl"
    data.write_bytes(b"\n".join(hostile) + b"\n")
    done = replay("--config", simple_config, "--output-dir", tmp_path / "o", data)
    assert done.returncode == 0
    assert b"Traceback" not in done.stderr
    letters = read_topic(tmp_path / "o", "xp-dead-letter")
    assert [(d["error"], d["source"]["line"]) for d in letters] == [
        ("invalid_json", 1), ("invalid_json", 2), ("invalid_json", 3), ("bad_amount", 4), ("invalid_json", 5),
        ("invalid_json", 6), ("invalid_json", 8), ("invalid_json", 9)]
    assert "record_base64" in letters[0] and "record_base64" in letters[1]
    [session] = read_topic(tmp_path / "o", "sessions")
    assert session["value"]["event_count"] == 2  # line 7 (the valid 1 MB line) and line 10


@pytest.mark.parametrize("setup, message", [
    (lambda d: ["--config", d / "nope.toml", "--output-dir", d / "o", d / "in.jsonl"], "nope.toml: cannot read"),
    (lambda d: ["--config", d / "bad.toml", "--output-dir", d / "o", d / "in.jsonl"], "sessions.gap: "),
    (lambda d: ["--config", d / "ok.toml", "--output-dir", d / "o", d / "missing.jsonl"],
     "missing.jsonl: no such input file"),
    (lambda d: ["--config", d / "ok.toml", "--output-dir", d / "o", d], "is a directory"),
    (lambda d: ["--config", d / "ok.toml", "--output-dir", d / "o", d / "fake.gz"], "fake.gz: not a gzip file"),
    (lambda d: ["--config", d / "ok.toml", "--output-dir", d / "in.jsonl" / "o", d / "in.jsonl"],
     "cannot write the output directory"),
])
def test_user_errors_exit_2_with_one_clear_line_and_no_traceback(tmp_path, setup, message):
    (tmp_path / "ok.toml").write_text(SIMPLE_CONFIG)
    (tmp_path / "bad.toml").write_text("[sessions]\ngap = \"soon\"\n")
    (tmp_path / "in.jsonl").write_text('{"user_id":"a","timestamp":1}\n')
    (tmp_path / "fake.gz").write_text("plain text\n")
    done = replay(*setup(tmp_path))
    stderr = done.stderr.decode()
    assert done.returncode == 2
    assert message in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_corrupt_gzip_mid_file_names_the_file(tmp_path, simple_config):
    data = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(b'{"user_id":"a","timestamp":1}\n' * 10_000)
    data.write_bytes(whole[: len(whole) // 2])
    done = replay("--config", simple_config, "--output-dir", tmp_path / "o", data)
    assert done.returncode == 2
    assert f"{data}: cannot read the input" in done.stderr.decode()
    assert b"Traceback" not in done.stderr


def test_an_unknown_core_fails_at_start_naming_the_variable(tmp_path, simple_config):
    data = tmp_path / "in.jsonl"
    data.write_text('{"user_id":"a","timestamp":1}\n')
    done = replay("--config", simple_config, "--output-dir", tmp_path / "o", data,
                  env={**os.environ, "SESSIONIZER_CORE": "fast"})
    assert done.returncode == 2
    assert done.stderr.decode().strip() == "sessionizer: error: SESSIONIZER_CORE: 'fast' is neither 'native' nor 'python'"
    assert not (tmp_path / "o").exists()
