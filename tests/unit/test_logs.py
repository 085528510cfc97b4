import logging

import orjson

from sessionizer.logs import JsonFormatter, LogfmtFormatter


def record(msg: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("sessionizer.run", logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_logfmt_lines_carry_fields_and_quote_what_needs_it():
    line = LogfmtFormatter().format(record("status", records_per_s=12, lag=0, note='has "quotes" and spaces'))
    assert " level=info logger=sessionizer.run msg=status records_per_s=12 lag=0 " in line
    assert 'note="has \\"quotes\\" and spaces"' in line


def test_json_lines():
    fields = orjson.loads(JsonFormatter().format(record("assigned", partitions="0,1")))
    assert fields["msg"] == "assigned" and fields["partitions"] == "0,1" and fields["level"] == "info"
