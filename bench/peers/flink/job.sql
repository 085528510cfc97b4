-- The job of `make bench-compare` in Flink SQL, as a Confluent Cloud or AWS Managed Flink user
-- writes it: per-player sessions by a 10-minute gap and 2-minute tumbling windows (window TVFs),
-- exact DECIMAL sums, read from Kafka and written to Kafka exactly once. @NAME@ are filled in by
-- run.py. Settings: what an expert sets for a small, keyed job on 2 cores (heap state, checkpoints
-- as often as sessionizer commits, parallelism 2).
SET 'parallelism.default' = '2';
SET 'execution.checkpointing.interval' = '250ms';
SET 'execution.checkpointing.mode' = 'EXACTLY_ONCE';
SET 'execution.checkpointing.dir' = 'file://@CHECKPOINTS@';
SET 'state.backend.type' = 'hashmap';
SET 'table.local-time-zone' = 'UTC';
SET 'pipeline.name' = 'sessionizer-compare';

CREATE TABLE spins (
  `event` STRING,
  user_id STRING,
  `timestamp` STRING,
  `value` ROW<stake DECIMAL(18, 6), win DECIMAL(18, 6), game_code STRING, channel STRING>,
  -- The feed's three timestamp shapes: epoch milliseconds, ISO 8601 in UTC, 'yyyy-MM-dd HH:mm:ss.SSS' (UTC)
  ts AS CASE
    WHEN REGEXP(`timestamp`, '^[0-9]+$') THEN CAST(TO_TIMESTAMP_LTZ(CAST(`timestamp` AS BIGINT), 3) AS TIMESTAMP(3))
    ELSE CAST(REPLACE(REPLACE(`timestamp`, 'T', ' '), 'Z', '') AS TIMESTAMP(3))
  END,
  -- 30 s of grace: a window's result waits until records 30 s past its end have been seen
  WATERMARK FOR ts AS ts - INTERVAL '30' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '@INPUT@',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'properties.group.id' = '@GROUP@',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true'
);

CREATE VIEW valid_spins AS
SELECT user_id, ts, `value`.stake AS stake, `value`.win AS win, `value`.game_code AS game_code,
       `value`.channel AS channel
FROM spins
WHERE `event` = 'spin' AND user_id IS NOT NULL AND ts IS NOT NULL;

CREATE TABLE sessions_out (
  `event` STRING,
  user_id STRING,
  `timestamp` STRING,
  `value` ROW<session_start_ms BIGINT, session_end_ms BIGINT, duration_ms BIGINT, event_count BIGINT,
              stake_total DECIMAL(38, 6), win_total DECIMAL(38, 6), net_total DECIMAL(38, 6), game_code STRING,
              channel STRING, close_reason STRING>
) WITH (
  'connector' = 'kafka',
  'topic' = '@SESSIONS@',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'properties.transaction.timeout.ms' = '60000',
  'key.format' = 'raw',
  'key.fields' = 'user_id',
  'value.format' = 'json',
  'value.json.encode.decimal-as-plain-number' = 'true',
  'value.fields-include' = 'ALL',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '@GROUP@-sessions'
);

CREATE TABLE rolling_out (
  `event` STRING,
  user_id STRING,
  `timestamp` STRING,
  `value` ROW<window_start_ms BIGINT, window_end_ms BIGINT, event_count BIGINT, stake_total DECIMAL(38, 6),
              win_total DECIMAL(38, 6), net_total DECIMAL(38, 6)>
) WITH (
  'connector' = 'kafka',
  'topic' = '@ROLLING@',
  'properties.bootstrap.servers' = '@BOOTSTRAP@',
  'properties.transaction.timeout.ms' = '60000',
  'key.format' = 'raw',
  'key.fields' = 'user_id',
  'value.format' = 'json',
  'value.json.encode.decimal-as-plain-number' = 'true',
  'value.fields-include' = 'ALL',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '@GROUP@-rolling'
);

-- epoch milliseconds of a TIMESTAMP(3) in UTC: whole seconds, plus the milliseconds
CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS epoch_ms AS 'sessionizer.peer.EpochMillis';

INSERT INTO sessions_out
SELECT 'session', user_id, DATE_FORMAT(window_start, 'yyyy-MM-dd HH:mm:ss'),
       ROW(epoch_ms(window_start), epoch_ms(window_end), epoch_ms(window_end) - epoch_ms(window_start), COUNT(*),
           COALESCE(SUM(stake), 0), COALESCE(SUM(win), 0), COALESCE(SUM(win), 0) - COALESCE(SUM(stake), 0),
           -- LAST_VALUE cannot merge session windows (Flink has no merge for it): no labels here
           CAST(NULL AS STRING), CAST(NULL AS STRING), 'inactivity')
FROM TABLE(SESSION(TABLE valid_spins PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '10' MINUTES))
GROUP BY window_start, window_end, user_id;

INSERT INTO rolling_out
SELECT 'session_summary', user_id, DATE_FORMAT(window_start, 'yyyy-MM-dd HH:mm:ss'),
       ROW(epoch_ms(window_start), epoch_ms(window_end), COUNT(*), COALESCE(SUM(stake), 0), COALESCE(SUM(win), 0),
           COALESCE(SUM(win), 0) - COALESCE(SUM(stake), 0))
FROM TABLE(TUMBLE(TABLE valid_spins, DESCRIPTOR(ts), INTERVAL '2' MINUTES))
GROUP BY window_start, window_end, user_id;
