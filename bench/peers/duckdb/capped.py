"""DuckDB doing `make bench`'s job as a DuckDB user writes it: the same capped sessions (10-minute gap,
at most 10 minutes and 200 spins, close reasons included) and 2-minute windows per player, from the
same JSON-lines file, with declared column types and exact DECIMAL(18,6) money.

- `read_ndjson` with declared columns (no per-field JSON extraction; spins.py, shared with replay.py);
- sessions as gaps-and-islands with window functions; only the islands a cap can split (longer than
  10 minutes or more than 200 spins, a few percent) go through a recursive CTE, which is sequential by
  nature (where the next capped session starts depends on where this one started);
- `COPY ... TO` JSON lines, as sessionizer writes its own.

    python capped.py INPUT.jsonl OUTPUT_DIR [THREADS]

Nothing in replay's semantics is left out for these streams: records are at most 20 s out of order
and the grace is 30 s, so none is late and the full sort equals sessionizer's incremental sweep.
"""

from __future__ import annotations

from spins import run

GAP_MS, MAX_DURATION_MS, MAX_EVENTS, GRACE_MS, WINDOW_MS = 600_000, 600_000, 200, 30_000, 120_000

SQL = f"""
-- Islands: runs of a player's spins no more than the gap apart.
CREATE TEMP TABLE islands AS
SELECT *, sum(CASE WHEN since IS NULL OR since > {GAP_MS} THEN 1 ELSE 0 END)
            OVER (PARTITION BY user_id ORDER BY t, arrival ROWS UNBOUNDED PRECEDING) AS island
FROM (SELECT *, t - lag(t) OVER (PARTITION BY user_id ORDER BY t, arrival) AS since FROM spins);

CREATE TEMP TABLE long_islands AS
SELECT user_id, island FROM islands GROUP BY ALL
HAVING count(*) > {MAX_EVENTS} OR max(t) - min(t) > {MAX_DURATION_MS};

-- Within a long island, the caps cut it sequentially.
CREATE TEMP TABLE long_rows AS
SELECT i.user_id, i.island, i.t, row_number() OVER (PARTITION BY i.user_id, i.island ORDER BY i.t, i.arrival) AS n,
       i.arrival
FROM islands i JOIN long_islands USING (user_id, island);

CREATE TEMP TABLE parts AS
WITH RECURSIVE sweep(user_id, island, n, arrival, start, cnt, part) AS (
    SELECT user_id, island, n, arrival, t, 1, 1 FROM long_rows WHERE n = 1
    UNION ALL
    SELECT r.user_id, r.island, r.n, r.arrival,
           CASE WHEN s.cnt >= {MAX_EVENTS} OR r.t - s.start > {MAX_DURATION_MS} THEN r.t ELSE s.start END,
           CASE WHEN s.cnt >= {MAX_EVENTS} OR r.t - s.start > {MAX_DURATION_MS} THEN 1 ELSE s.cnt + 1 END,
           CASE WHEN s.cnt >= {MAX_EVENTS} OR r.t - s.start > {MAX_DURATION_MS} THEN s.part + 1 ELSE s.part END
    FROM sweep s JOIN long_rows r ON r.user_id = s.user_id AND r.island = s.island AND r.n = s.n + 1)
SELECT user_id, arrival, part FROM sweep;

CREATE TEMP TABLE sessions AS
SELECT user_id, island, COALESCE(p.part, 1) AS part, min(t) AS start_ms, max(t) AS end_ms, count(*) AS events,
       sum(stake) AS stake, sum(win) AS win,
       arg_max(game_code, (t, arrival)) FILTER (WHERE game_code IS NOT NULL) AS game,
       arg_max(channel, (t, arrival)) FILTER (WHERE channel IS NOT NULL) AS channel
FROM islands LEFT JOIN parts p USING (user_id, arrival)
GROUP BY user_id, island, COALESCE(p.part, 1);

COPY (
  SELECT 'session' AS event, user_id, strftime(make_timestamp(start_ms * 1000), '%Y-%m-%d %H:%M:%S') AS timestamp,
         {{'session_start_ms': start_ms, 'session_end_ms': end_ms, 'duration_ms': end_ms - start_ms,
          'event_count': events, 'stake_total': stake, 'win_total': win, 'net_total': win - stake,
          'game_code': game, 'channel': channel,
          'close_reason': CASE
              WHEN events = {MAX_EVENTS} THEN 'max_events'
              WHEN lead(island) OVER w = island THEN 'max_duration'
              WHEN lead(island) OVER w IS NOT NULL THEN 'inactivity'
              WHEN end_ms + {GAP_MS + GRACE_MS + 1} > (SELECT max(t) FROM spins) THEN 'end_of_input'
              ELSE 'inactivity' END}} AS value,
         {{}} AS user_attributes
  FROM sessions WINDOW w AS (PARTITION BY user_id ORDER BY island, part)
) TO '{{out}}/sessions.jsonl' (FORMAT JSON);

COPY (
  SELECT 'session_summary' AS event, user_id,
         strftime(make_timestamp(w * {WINDOW_MS} * 1000), '%Y-%m-%d %H:%M:%S') AS timestamp,
         {{'window_start_ms': w * {WINDOW_MS}, 'window_end_ms': w * {WINDOW_MS} + {WINDOW_MS},
          'event_count': count(*), 'stake_total': sum(stake), 'win_total': sum(win),
          'net_total': sum(win) - sum(stake)}} AS value,
         {{}} AS user_attributes
  FROM (SELECT *, t // {WINDOW_MS} AS w FROM spins) GROUP BY user_id, w
) TO '{{out}}/rolling.jsonl' (FORMAT JSON);
"""


if __name__ == "__main__":
    run(SQL)
