"""`examples/wallet-feed.toml` on its bundled sample, end to end through `sessionizer replay`:
the totals add up to what the feed itself says once each transaction is counted once."""

import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "wallet-feed.toml"
SAMPLE = ROOT / "examples" / "sample-wallet.jsonl"
EXACT = msgspec.json.Decoder(float_hook=Decimal)


def read(path: Path) -> list[dict]:
    return [EXACT.decode(line) for line in path.read_bytes().splitlines()]


def test_the_bundled_sample_is_what_generate_makes():
    made = subprocess.run([sys.executable, "-m", "sessionizer", "generate", "--shape", "wallet", "--events", "3000",
                           "--players", "200", "--duplicate-share", "0.02", "--other-events-share", "0.02",
                           "--seed", "7"], capture_output=True, check=True).stdout
    assert made == SAMPLE.read_bytes()


def test_the_wallet_example_counts_each_transaction_once(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sessionizer", "replay", "--config", str(CONFIG), "--output-dir",
                           str(tmp_path), str(SAMPLE)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    feed = read(SAMPLE)
    money = [r for r in feed if r["type"] in ("BET", "WIN", "ROLLBACK")]
    first_copies = {(r["playerId"], r["txId"]): r for r in money}  # copies are identical records
    copies = len(money) - len(first_copies)
    assert copies > 10  # the sample does hold retried records
    kinds = Counter(r["type"] for r in first_copies.values())
    assert kinds["ROLLBACK"] > 0 and kinds["WIN"] > 0

    letters = read(tmp_path / "xp-dead-letter.jsonl")
    assert Counter(d["error"] for d in letters) == {"duplicate": copies}
    sessions = [s["value"] for s in read(tmp_path / "xp-session-events.jsonl")]
    amount = {kind: sum(Decimal(r["amount"]) for r in first_copies.values() if r["type"] == kind)
              for kind in ("BET", "WIN", "ROLLBACK")}
    assert sum(s["stake_total"] for s in sessions) == amount["BET"] - amount["ROLLBACK"]
    assert sum(s["win_total"] for s in sessions) == amount["WIN"]
    assert sum(s["event_count"] for s in sessions) == kinds["BET"]  # wins and rollbacks do not count
    assert sum(s["wins"] for s in sessions) == kinds["WIN"]
    assert sum(s["rollbacks"] for s in sessions) == kinds["ROLLBACK"]
    for session in sessions:
        assert session["largest_win"] is None or session["largest_win"] <= session["win_total"]
        assert 1 <= session["distinct_games"] and isinstance(session["first_game"], str)
    windows = [w["value"] for w in read(tmp_path / "xp-rolling-5min-game.jsonl")]
    assert sum(w["stake_total"] for w in windows) == amount["BET"] - amount["ROLLBACK"]
    assert max(w["largest_win"] or 0 for w in windows) == max(
        Decimal(r["amount"]) for r in first_copies.values() if r["type"] == "WIN")
