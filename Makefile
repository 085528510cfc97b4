# sessionizer: `make run` replays the bundled sample; `make test` runs every test.
#
# The distribution's CPython (built with PGO and LTO) runs this code about 1.7x
# faster than an unoptimized build, so it is preferred when present.
PYTHON ?= $(shell if [ -x /usr/bin/python3.11 ]; then echo /usr/bin/python3.11; else command -v python3; fi)
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE_STAMP := $(VENV)/.native-installed
KAFKA_LIBS := .cache/kafka/libs
KAFKA_STAMP := $(KAFKA_LIBS)/.fetched
OUT := out

export PYTHONDONTWRITEBYTECODE :=

.PHONY: run test test-unit bench bench-kafka bench-compare kafka demo venv kafka-jars test-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[kafka,aws,gcp,test,bench]'
	touch $(STAMP)

# The compiled core (Rust, built with cargo through maturin); `SESSIONIZER_CORE=python` runs without it.
$(NATIVE_STAMP): $(STAMP) native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
	$(PY) -m pip install -q ./native
	touch $(NATIVE_STAMP)

venv: $(STAMP) $(NATIVE_STAMP)

# The real Apache Kafka broker (KRaft) for the tests, from Maven Central.
$(KAFKA_STAMP): tools/kafka/pom.xml
	mvn -q -B -f tools/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$(CURDIR)/$(KAFKA_LIBS)"
	touch $(KAFKA_STAMP)

kafka-jars: $(KAFKA_STAMP)

# The monitoring tests use a real Prometheus (and its promtool) and a real headless Chromium:
# Debian's packages, installed when missing (as root; otherwise the command to run is printed).
TEST_TOOLS := prometheus promtool chromium
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's prometheus and chromium (missing:$$missing)"; \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				prometheus chromium >/dev/null; \
		else \
			echo "run: sudo apt-get install prometheus chromium" >&2; exit 1; \
		fi; \
	fi

run: $(STAMP) $(NATIVE_STAMP)
	$(BIN)/sessionizer replay --config examples/xtremepush.toml --output-dir $(OUT) examples/sample-spins.jsonl
	@echo
	@echo "Final records are in $(OUT)/, one JSON-lines file per topic. A few of them:"
	@for f in $(OUT)/*.jsonl; do echo "--- $$f ($$(wc -l < $$f) records)"; head -n 2 $$f; done

test: $(STAMP) $(NATIVE_STAMP) $(KAFKA_STAMP) test-tools
	$(PY) -m pytest

test-unit: $(STAMP) $(NATIVE_STAMP)
	$(PY) -m pytest tests/unit tests/property

bench: $(STAMP) $(NATIVE_STAMP)
	$(PY) bench/replay_bench.py

# A local broker on 127.0.0.1:9092 for trying `sessionizer run` by hand (Ctrl-C stops it).
kafka: $(STAMP) $(NATIVE_STAMP) $(KAFKA_STAMP)
	$(PY) tools/kafka/broker.py --port 9092

# A broker of its own, the sample produced into it, `sessionizer run`, final records as they commit.
demo: $(STAMP) $(NATIVE_STAMP) $(KAFKA_STAMP)
	$(PY) tools/demo.py

bench-kafka: $(STAMP) $(NATIVE_STAMP) $(KAFKA_STAMP)
	$(PY) bench/kafka_bench.py

# sessionizer against Kafka Streams, Quix Streams and DuckDB on the same data (writes BENCHMARKS.md and a chart).
bench-compare: $(STAMP) $(NATIVE_STAMP) $(KAFKA_STAMP)
	$(PY) bench/compare.py

clean:
	rm -rf $(VENV) $(OUT) build native/target bench/data bench/results .pytest_cache .hypothesis
