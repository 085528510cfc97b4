"""Generated spin files the benches share (in bench/data; made when missing, by the same generator
as `sessionizer generate`), so that each file is made one way, whichever bench makes it first."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
from sessionizer.sample import SampleShape, generate  # noqa: E402

DATA = HERE / "data"
SPINS_1M = DATA / "spins-1m.jsonl"      # 1M spins of 100k players (make bench-kafka, make bench-compare)
SPINS_500K = DATA / "spins-500k.jsonl"  # 500k of 50k players (make bench-compare; make bench makes the same file)

SHAPES = {SPINS_1M: SampleShape(events=1_000_000, players=100_000, seed=99, delayed_share=0.2),
          SPINS_500K: SampleShape(events=500_000, players=50_000, seed=42, delayed_share=0.2)}


def ensure(path: Path) -> Path:
    """`path`, generated first if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {path.name} ...", file=sys.stderr)
        partial = path.with_suffix(".partial")  # renamed when whole: an interrupted run leaves no short file
        with open(partial, "wb") as out:
            for line in generate(SHAPES[path]):
                out.write(line + b"\n")
        partial.replace(path)
    return path
