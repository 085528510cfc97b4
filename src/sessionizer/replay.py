"""`sessionizer replay`: JSON-lines files -> the core (one partition) -> one file per output topic.

The edge around the pure core for backfills, tests and what-ifs: the same code
as the Kafka runtime, with end of input closing whatever is still open.
"""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .core.native import CorePartition, new_partition
from .core.partition import PartitionStats
from .core.spec import JobSpec

CHUNK_BYTES = 1 << 18  # input read (and what became final written) about this much at a time


class ReplayError(Exception):
    """A user-facing problem with an input or the output directory (exit 2)."""


@dataclass
class ReplayResult:
    stats: PartitionStats
    elapsed: float
    files: dict[str, Path]  # topic -> output file


def replay(spec: JobSpec, inputs: list[str], output_dir: str | Path, progress: bool = False) -> ReplayResult:
    started = time.perf_counter()
    sources = [_open_input(name) for name in inputs]  # every input is checked before any output
    out_dir = Path(output_dir)
    with ExitStack() as stack:
        for source in sources:
            stack.callback(source.close)
        sinks = _open_outputs(out_dir, spec.topics, stack)
        part = new_partition(spec, describe_source=_file_line, keeps_state=False)  # no state is read back
        bar = _progress_bar(inputs, stack) if progress else None
        for name, stream in zip(inputs, sources):
            label = "<stdin>" if name == "-" else name
            line_no = 1
            for text, stop in _chunks(stream, label):
                lines = part.feed_text(text, stop, label, line_no)
                line_no += lines
                _write(part, sinks)
                if bar is not None:
                    bar.update(lines)
        part.end_of_input()
        _write(part, sinks)
        for sink in sinks.values():
            sink.flush()
    return ReplayResult(part.stats, time.perf_counter() - started, {t: out_dir / f"{t}.jsonl" for t in spec.topics})


def _file_line(source: tuple[str, int]) -> dict:
    return {"file": source[0], "line": source[1]}


def _chunks(stream: BinaryIO, label: str) -> Iterator[tuple[bytearray, int]]:
    """The input about CHUNK_BYTES at a time, as (text, stop): `text[:stop]` is whole lines (the
    last line of the input may have no end). `text` is one buffer, read into again for the next
    chunk (the rest of a line moved to its front): no new bytes object and no copy of a chunk per
    chunk, and a chunk small enough to be still in the CPU's cache when the core reads it."""
    try:
        text = bytearray(CHUNK_BYTES)
        filled = 0  # bytes at the front: the start of a line the last chunk cut
        while True:
            if filled == len(text):  # a line longer than the buffer: make room for it
                text.extend(bytes(len(text)))
            with memoryview(text) as view:
                read = stream.readinto(view[filled:])
            if not read:
                break
            filled += read
            stop = text.rfind(b"\n", 0, filled) + 1
            if stop:
                yield text, stop
                text[:filled - stop] = text[stop:filled]  # the cut line to the front
                filled -= stop
        if filled:
            yield text, filled
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ReplayError(f"{label}: cannot read the input ({error})") from None


def _open_input(name: str) -> BinaryIO:
    if name == "-":
        return sys.stdin.buffer
    path = Path(name)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise ReplayError(f"{name}: no such input file") from None
    except IsADirectoryError:
        raise ReplayError(f"{name}: is a directory, not an input file") from None
    except OSError as error:
        raise ReplayError(f"{name}: cannot open the input ({error.strerror})") from None
    if name.endswith(".gz"):
        if raw.read(2) != b"\x1f\x8b":
            raw.close()
            raise ReplayError(f"{name}: not a gzip file (the name ends in .gz)")
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _open_outputs(out_dir: Path, topics: list[str], stack: ExitStack) -> dict[str, BinaryIO]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return {topic: stack.enter_context(open(out_dir / f"{topic}.jsonl", "wb", buffering=1 << 20))
                for topic in topics}
    except OSError as error:
        raise ReplayError(f"{out_dir}: cannot write the output directory ({error.strerror})") from None


def _write(part: CorePartition, sinks: dict[str, BinaryIO]) -> None:
    for topic, (_, text) in part.drain_lines_by_topic().items():
        sinks[topic].write(text)


def _progress_bar(inputs: list[str], stack: ExitStack):
    from tqdm import tqdm

    return stack.enter_context(tqdm(unit=" records", unit_scale=True, file=sys.stderr, leave=False))


def summary(result: ReplayResult) -> str:
    s = result.stats
    rate = s.read / result.elapsed if result.elapsed > 0 else 0.0
    lines = [
        f"sessionizer replay: {s.read:,} records in {result.elapsed:.2f} s ({rate:,.0f} events/s)",
        f"  read {s.read:,}   accepted {s.valid:,}   skipped by the events filter {s.skipped:,}",
        "  dead letters: " + (", ".join(f"{code} {n:,}" for code, n in sorted(s.dead_letters.items())) or "none"),
        "  records out:",
    ]
    for topic, path in result.files.items():
        lines.append(f"    {s.out.get(topic, 0):>9,}  {topic:<24} {path}")
    return "\n".join(lines)

