"""The DuckDB peer of `make bench-compare` (the replay/backfill case): the same uncapped sessions
(10-minute gap) and 2-minute tumbling windows per player, in SQL over the same JSON-lines file,
with exact DECIMAL(18,6) amounts, written as JSON lines.

    python replay.py INPUT.jsonl OUTPUT_DIR
"""

import sys
from pathlib import Path

import duckdb

SQL = """
CREATE TEMP TABLE spins AS
SELECT user_id,
       CASE WHEN regexp_full_match(ts, '[0-9]+') THEN CAST(ts AS BIGINT)
            WHEN contains(ts, 'T') THEN epoch_ms(CAST(ts AS TIMESTAMPTZ))
            ELSE epoch_ms(CAST(ts AS TIMESTAMP)) END AS t,
       COALESCE(CAST(stake AS DECIMAL(18, 6)), 0) AS stake,
       COALESCE(CAST(win AS DECIMAL(18, 6)), 0) AS win,
       game_code, channel, row_number() OVER () AS arrival
FROM (SELECT user_id, json_extract_string(j, '$.timestamp') AS ts,
             json_extract_string(j, '$.value.stake') AS stake, json_extract_string(j, '$.value.win') AS win,
             json_extract_string(j, '$.value.game_code') AS game_code,
             json_extract_string(j, '$.value.channel') AS channel
      FROM (SELECT json AS j, json_extract_string(json, '$.user_id') AS user_id
            FROM read_ndjson_objects(?))
      WHERE json_extract_string(j, '$.event') = 'spin');

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
