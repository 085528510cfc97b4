"""The DuckDB peer of `make bench-compare` (the replay/backfill case): the same uncapped sessions
(10-minute gap) and 2-minute tumbling windows per player, in SQL over the same JSON-lines file,
with exact DECIMAL(18,6) amounts, read with declared column types (read_ndjson), written as JSON lines.
The capped job of `make bench` is bench/peers/duckdb/capped.py.

    python replay.py INPUT.jsonl OUTPUT_DIR   (the spins are read by spins.py, shared with capped.py)
"""

from spins import run

SQL = """
COPY (
  WITH ordered AS (
    SELECT *, t - lag(t) OVER (PARTITION BY user_id ORDER BY t, arrival) AS since FROM spins),
  numbered AS (
    SELECT *, sum(CASE WHEN since IS NULL OR since > 600000 THEN 1 ELSE 0 END)
                OVER (PARTITION BY user_id ORDER BY t, arrival ROWS UNBOUNDED PRECEDING) AS session FROM ordered)
  SELECT 'session' AS event, user_id, strftime(to_timestamp(min(t) // 1000), '%Y-%m-%d %H:%M:%S') AS timestamp,
         {'session_start_ms': min(t), 'session_end_ms': max(t), 'duration_ms': max(t) - min(t),
          'event_count': count(*), 'stake_total': sum(stake), 'win_total': sum(win),
          'net_total': sum(win) - sum(stake),
          'game_code': arg_max(game_code, (t, arrival)) FILTER (WHERE game_code IS NOT NULL),
          'channel': arg_max(channel, (t, arrival)) FILTER (WHERE channel IS NOT NULL),
          'close_reason': 'end_of_input'} AS value,
         {} AS user_attributes
  FROM numbered GROUP BY user_id, session
) TO '{out}/sessions.jsonl' (FORMAT JSON);

COPY (
  SELECT 'session_summary' AS event, user_id,
         strftime(to_timestamp((t // 120000) * 120), '%Y-%m-%d %H:%M:%S') AS timestamp,
         {'window_start_ms': (t // 120000) * 120000, 'window_end_ms': (t // 120000) * 120000 + 120000,
          'event_count': count(*), 'stake_total': sum(stake), 'win_total': sum(win),
          'net_total': sum(win) - sum(stake)} AS value,
         {} AS user_attributes
  FROM spins GROUP BY user_id, t // 120000
) TO '{out}/rolling.jsonl' (FORMAT JSON);
"""


if __name__ == "__main__":
    run(SQL)
