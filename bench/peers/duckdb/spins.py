"""What both DuckDB peers share: the spins read as a DuckDB user reads JSON lines (read_ndjson with
declared column types, exact DECIMAL(18,6) money, the three event-time formats), and the driver.

    python <peer>.py INPUT.jsonl OUTPUT_DIR [THREADS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

SPINS = """
CREATE TEMP TABLE spins AS
SELECT user_id,
       CASE WHEN regexp_full_match(timestamp, '[0-9]+') THEN CAST(timestamp AS BIGINT)
            WHEN contains(timestamp, 'T') THEN epoch_ms(CAST(timestamp AS TIMESTAMPTZ))
            ELSE epoch_ms(CAST(timestamp AS TIMESTAMP)) END AS t,
       COALESCE(value.stake, 0) AS stake, COALESCE(value.win, 0) AS win,
       value.game_code AS game_code, value.channel AS channel,
       row_number() OVER () AS arrival
FROM read_ndjson($input, columns = {
    event: 'VARCHAR', user_id: 'VARCHAR', timestamp: 'VARCHAR',
    value: 'STRUCT(stake DECIMAL(18, 6), win DECIMAL(18, 6), game_code VARCHAR, channel VARCHAR)'})
WHERE event = 'spin'
"""


def run(sql: str) -> None:
    """Load the spins of argv[1], then run `sql` (statements ending in ";\\n"; `{out}` is argv[2])."""
    source, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    if len(sys.argv) > 3:
        con.execute(f"SET threads = {int(sys.argv[3])}")
    con.execute(SPINS, {"input": source})
    for statement in (s for s in sql.replace("{out}", str(out)).split(";\n") if s.strip()):
        con.execute(statement)
