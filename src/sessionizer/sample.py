"""Realistic, reproducible spin streams: the bundled sample, test inputs and benchmark data.

Players have Zipf-like activity; each plays sessions of spins a few seconds
apart, sometimes switching game; records arrive out of order by up to
`max_delay_ms`; optionally a share of late and malformed lines is mixed in.
Same seed, same bytes.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson

GAMES = ["starburst", "book-of-dead", "gonzos-quest", "big-bass-bonanza", "sweet-bonanza",
         "gates-of-olympus", "mega-moolah", "lightning-roulette", "blackjack-classic", "dead-or-alive-2"]
CHANNELS = ["mobile", "web", "app-ios", "app-android"]
STAKES = ["0.10", "0.20", "0.25", "0.50", "1", "1.50", "2", "5", "10"]
START = datetime(2026, 11, 2, 18, 0, tzinfo=timezone.utc)

MALFORMED = [
    b'{"event":"spin","user_id":"p000001","timestamp":"2026-11-02 18:00:00","value":{"stake":1.0',  # truncated
    b'not json at all',
    b'["an", "array"]',
    b'{"event":"spin","timestamp":"2026-11-02 18:05:00","value":{"stake":1}}',  # missing key
    b'{"event":"spin","user_id":"","timestamp":"2026-11-02 18:05:00","value":{"stake":1}}',  # empty key
    b'{"event":"spin","user_id":"p000002","value":{"stake":1}}',  # missing time
    b'{"event":"spin","user_id":"p000002","timestamp":"02/11/2026 18:05","value":{"stake":1}}',  # bad time
    b'{"event":"spin","user_id":"p000003","timestamp":"2026-11-02 18:05:00","value":{"stake":-2}}',
    b'{"event":"spin","user_id":"p000003","timestamp":"2026-11-02 18:05:00","value":{"stake":"abc"}}',
    b'{"event":"spin","user_id":"p000003","timestamp":"2026-11-02 18:05:00","value":{"stake":0.0000001}}',
    b'{"event":"spin","user_id":"p000004","timestamp":"2026-11-02 18:05:00","value":{"stake":1,"game_code":7}}',
    b'{"event":"spin","user_id":"p000004","timestamp":"2026-11-02 18:05:00","value":{"stake":1,"win":1e13}}',
    b'\xff\xfe{"event":"spin"}',
]


@dataclass(frozen=True)
class SampleShape:
    events: int = 4000
    players: int = 300
    seed: int = 7
    max_delay_ms: int = 20_000  # out-of-order arrival, up to this much after the event
    delayed_share: float = 0.05  # share of records that arrive late by up to max_delay_ms
    late_share: float = 0.0  # share of records replayed an hour after the event (late for sessions)
    malformed_share: float = 0.0  # share of lines that are broken in some way
    other_events_share: float = 0.0  # share of non-spin events (for the `events` filter)
    zipf: float = 1.1
    # Peak hour: every player plays within this many minutes of event time (None: spread over a day,
    # with long breaks between a player's sessions). Spins stay seconds apart; breaks get short.
    span_minutes: int | None = None
    # "spins": one `spin` record holds stake and win. "wallet": a wallet feed (SPEC section 7): a
    # BET, then a WIN when the spin won, and now and then a ROLLBACK refunding a bet, each with
    # its own transaction id (`txId`).
    shape: str = "spins"
    duplicate_share: float = 0.0  # share of records sent twice (a producer retry; same txId in a wallet feed)


def generate(shape: SampleShape) -> Iterator[bytes]:
    """JSON lines (without newlines), in arrival order."""
    rng = random.Random(shape.seed)
    # Zipf-Mandelbrot: a heavy head of players, but none with an impossible share of the spins
    # (a shift of 1% of the players keeps the busiest to a few hundred spins a day at 1M events).
    shift = 1 + shape.players // 100
    weights = [1.0 / (rank + shift) ** shape.zipf for rank in range(shape.players)]
    ids = [f"p{n:06d}" for n in rng.sample(range(1, 10 * shape.players + 1), shape.players)]
    # Each player gets a share of the spins by weight, played as sessions spread over the day.
    shares = rng.choices(range(shape.players), weights=weights, k=shape.events)
    per_player = [0] * shape.players
    for player in shares:
        per_player[player] += 1
    peak = shape.span_minutes is not None
    span_ms = shape.span_minutes * 60_000 if peak else max(3_600_000, shape.events * 40)  # busier, longer day
    pending: list[tuple[int, int, bytes]] = []  # (arrival, tie, line)
    tie = 0
    for player, spins in enumerate(per_player):
        if peak:  # the player's whole evening fits in the span: start early enough to end within it
            clock = rng.randrange(0, max(1, span_ms - spins * 5_200))
        else:
            clock = rng.randrange(0, span_ms)
        game, channel = rng.choice(GAMES), rng.choice(CHANNELS)
        left_in_session = _session_length(rng)
        for _ in range(spins):
            if left_in_session == 0:
                # A break: at peak a short one (a drink, another tab), else longer than the usual gap.
                clock += rng.randrange(20_000, 120_000) if peak else rng.randrange(11 * 60_000, 90 * 60_000)
                channel = rng.choice(CHANNELS) if rng.random() < 0.3 else channel
                left_in_session = _session_length(rng)
            if rng.random() < 0.08:
                game = rng.choice(GAMES)
            clock += int(rng.expovariate(1 / 4500)) + 300
            left_in_session -= 1
            if shape.shape == "wallet":
                made = _wallet_spin(rng, ids[player], clock, game, channel)
            else:
                made = [(clock, _spin(rng, ids[player], clock, game, channel))]
            for at, line in made:
                arrival = at
                if rng.random() < shape.delayed_share:
                    arrival += rng.randrange(0, shape.max_delay_ms + 1)
                if shape.late_share and rng.random() < shape.late_share:
                    arrival += 3_600_000
                tie += 1
                pending.append((arrival, tie, line))
                if shape.duplicate_share and rng.random() < shape.duplicate_share:
                    tie += 1
                    pending.append((arrival + rng.randrange(50, 5_000), tie, line))  # a retry, sent again
            if shape.other_events_share and rng.random() < shape.other_events_share:
                tie += 1
                other = _other_wallet_event if shape.shape == "wallet" else _other_event
                pending.append((clock + 1, tie, other(rng, ids[player], clock + 1)))
    heapq.heapify(pending)
    while pending:
        _, _, line = heapq.heappop(pending)
        if shape.malformed_share and rng.random() < shape.malformed_share:
            yield rng.choice(MALFORMED)
        yield line


def _session_length(rng: random.Random) -> int:
    return max(1, int(rng.expovariate(1 / 40)))


def _spin(rng: random.Random, player: str, at_ms: int, game: str, channel: str) -> bytes:
    stake = rng.choice(STAKES)
    roll = rng.random()
    win = "0" if roll < 0.7 else f"{float(stake) * rng.choice([0.5, 1, 2, 3, 5, 10, 50]):.2f}"
    return orjson.dumps({
        "event": "spin",
        "user_id": player,
        "timestamp": _timestamp(rng, at_ms),
        "value": {"stake": orjson.Fragment(stake), "win": orjson.Fragment(win), "game_code": game,
                  "channel": channel, "currency": "EUR"},
    })


def _wallet_spin(rng: random.Random, player: str, at_ms: int, game: str, channel: str) -> list[tuple[int, bytes]]:
    """One spin as a wallet feed sends it: (event time, record) for its BET, its WIN if it won, and
    (rarely) a ROLLBACK of the bet."""
    stake = rng.choice(STAKES)
    tx = f"{player}-{at_ms}"

    def record(kind: str, at: int, amount: str, suffix: str) -> tuple[int, bytes]:
        return at, orjson.dumps({"type": kind, "playerId": player, "ts": _iso(at), "txId": tx + suffix,
                                 "amount": amount, "currency": "EUR", "game": game, "channel": channel})

    made = [record("BET", at_ms, stake, "-b")]
    roll = rng.random()
    if roll >= 0.7:
        made.append(record("WIN", at_ms + rng.randrange(50, 400),
                           f"{float(stake) * rng.choice([0.5, 1, 2, 3, 5, 10, 50]):.2f}", "-w"))
    elif roll < 0.01:
        made.append(record("ROLLBACK", at_ms + rng.randrange(500, 3000), stake, "-r"))
    return made


def _other_wallet_event(rng: random.Random, player: str, at_ms: int) -> bytes:
    return orjson.dumps({"type": rng.choice(["DEPOSIT", "LOGIN"]), "playerId": player, "ts": _iso(at_ms),
                         "txId": f"{player}-{at_ms}-o", "amount": "20.00", "currency": "EUR"})


def _iso(at_ms: int) -> str:
    moment = START + timedelta(milliseconds=at_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _other_event(rng: random.Random, player: str, at_ms: int) -> bytes:
    return orjson.dumps({"event": rng.choice(["deposit", "login", "bonus_claim"]), "user_id": player,
                         "timestamp": _timestamp(rng, at_ms), "value": {"amount": 20}})


def _timestamp(rng: random.Random, at_ms: int) -> str | int:
    moment = START + timedelta(milliseconds=at_ms)
    form = rng.random()
    if form < 0.8:
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    if form < 0.9:
        return int(moment.timestamp() * 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
