"""The DuckDB peer of `make bench-compare` (the replay/backfill case): the same uncapped sessions
(10-minute gap) and 2-minute tumbling windows per player, in SQL over the same JSON-lines file,
with exact DECIMAL(18,6) amounts, read with declared column types (read_ndjson), written as JSON lines.
The capped job of `make bench` is bench/peers/duckdb/capped.py.

    python replay.py INPUT.jsonl OUTPUT_DIR
"""

import sys
from pathlib import Path

import duckdb

SQL = """
CREATE TEMP TABLE spins AS
SELECT user_id,
       CASE WHEN regexp_full_match(timestamp, '[0-9]+') THEN CAST(timestamp AS BIGINT)
            WHEN contains(timestamp, 'T') THEN epoch_ms(CAST(timestamp AS TIMESTAMPTZ))
            ELSE epoch_ms(CAST(timestamp AS TIMESTAMP)) END AS t,
       COALESCE(value.stake, 0) AS stake, COALESCE(value.win, 0) AS win,
       value.game_code AS game_code, value.channel AS channel, row_number() OVER () AS arrival
FROM read_ndjson(?, columns = {
    event: 'VARCHAR', user_id: 'VARCHAR', timestamp: 'VARCHAR',
    value: 'STRUCT(stake DECIMAL(18, 6), win DECIMAL(18, 6), game_code VARCHAR, channel VARCHAR)'})
WHERE event = 'spin';

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


def main() -> None:
    source, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    statements = [s for s in SQL.replace("{out}", str(out)).split(";\n") if s.strip()]
    con.execute(statements[0], [source])
    for statement in statements[1:]:
        con.execute(statement)


if __name__ == "__main__":
    main()
