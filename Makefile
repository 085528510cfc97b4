# sessionizer: `make run` replays the bundled sample; `make test` runs every test.
#
# The distribution's CPython (built with PGO and LTO) runs this code about 1.7x
# faster than an unoptimized build, so it is preferred when present.
PYTHON ?= $(shell if [ -x /usr/bin/python3.11 ]; then echo /usr/bin/python3.11; else command -v python3; fi)
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
KAFKA_LIBS := .cache/kafka/libs
KAFKA_STAMP := $(KAFKA_LIBS)/.fetched
OUT := out

export PYTHONDONTWRITEBYTECODE :=

.PHONY: run test test-unit test-faults bench bench-kafka bench-compare kafka kafka-cluster demo venv kafka-jars test-tools wheel image clean

# One package, both cores: pip builds the compiled core (native/, Rust) into sessionizer._native
# with maturin, in release mode; `SESSIONIZER_CORE=python` runs the pure-Python reference instead.
$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	rm -f src/sessionizer/_native.*.so  # an older build's module would shadow the new one
	$(PY) -m pip install -q -e '.[aws,gcp,test,bench]'
	touch $(STAMP)

venv: $(STAMP)

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

run: $(STAMP)
	$(BIN)/sessionizer replay --config examples/xtremepush.toml --output-dir $(OUT) examples/sample-spins.jsonl
	@echo
	@echo "Final records are in $(OUT)/, one JSON-lines file per topic. A few of them:"
	@for f in $(OUT)/*.jsonl; do echo "--- $$f ($$(wc -l < $$f) records)"; head -n 2 $$f; done

test: $(STAMP) $(KAFKA_STAMP) test-tools wheel image
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/property

bench: $(STAMP)
	$(PY) bench/replay_bench.py

# A local broker on 127.0.0.1:9092 for trying `sessionizer run` by hand (Ctrl-C stops it).
kafka: $(STAMP) $(KAFKA_STAMP)
	$(PY) tools/kafka/broker.py --port 9092

# A local 3-node cluster (replication factor 3, min ISR 2, as managed Kafka runs) for trying faults by hand.
kafka-cluster: $(STAMP) $(KAFKA_STAMP)
	$(PY) tools/kafka/cluster.py

# The fault tests on a 3-node cluster alone (they run in `make test` too).
test-faults: $(STAMP) $(KAFKA_STAMP)
	$(PY) -m pytest tests/kafka/test_cluster_faults.py

# A broker of its own, the sample produced into it, `sessionizer run`, final records as they commit.
demo: $(STAMP) $(KAFKA_STAMP)
	$(PY) tools/demo.py

bench-kafka: $(STAMP) $(KAFKA_STAMP)
	$(PY) bench/kafka_bench.py

# sessionizer against Kafka Streams, Quix Streams and DuckDB on the same data (writes BENCHMARKS.md and a chart).
bench-compare: $(STAMP) $(KAFKA_STAMP)
	$(PY) bench/compare.py

# Wheels that need no compiler: a manylinux2014 abi3 wheel (Python 3.11+) linked by zig (from PyPI),
# its tag checked by auditwheel, and the sdist (which builds with pip where Rust is present).
WHEEL_TOOLS := $(VENV)/.wheel-tools
$(WHEEL_TOOLS): $(STAMP)
	$(PY) -m pip install -q 'maturin>=1.5,<2' ziglang auditwheel
	touch $@

DIST_STAMP := dist/.built
$(DIST_STAMP): $(WHEEL_TOOLS) pyproject.toml README.md $(NATIVE_SOURCES) $(shell find src -name '*.py')
	rm -rf dist
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/maturin build --release --zig --compatibility manylinux2014 --out dist --quiet
	$(BIN)/maturin sdist -m native/Cargo.toml --out dist  # -m: else it first looks for ./Cargo.toml and prints an error
	$(BIN)/auditwheel show dist/sessionizer-*.whl
	touch $@

wheel: $(DIST_STAMP)

# The container image (Containerfile), built here without a registry or a daemon: its two bases
# from Debian's packages (mmdebstrap), the image with buildah (rootless-capable: chroot isolation,
# vfs storage), the build stage using this machine's Rust toolchain. `make image` installs
# mmdebstrap and buildah with apt when they are missing.
IMAGE := localhost/sessionizer:0.1.0
IMAGE_STAMP := .cache/image/.built
BUILDAH := buildah --storage-driver vfs
RUSTUP_HOME ?= $(HOME)/.rustup
CARGO_HOME ?= $(HOME)/.cargo
# Behind a TLS-inspecting proxy (as here), pip and cargo in the build trust the host's CA bundle.
HOST_CA := $(or $(PIP_CERT),$(SSL_CERT_FILE))
IMAGE_CA := $(if $(HOST_CA),--volume $(HOST_CA):/etc/host-ca.crt:ro --build-arg PIP_CERT=/etc/host-ca.crt \
	--build-arg SSL_CERT_FILE=/etc/host-ca.crt)
image: $(IMAGE_STAMP)

$(IMAGE_STAMP): Containerfile tools/image/bases.sh pyproject.toml README.md $(NATIVE_SOURCES) $(shell find src -name '*.py')
	tools/image/bases.sh
	$(BUILDAH) build --quiet --isolation chroot --layers=false \
		--build-arg BASE=localhost/sessionizer-base:bookworm --build-arg BUILDER=localhost/sessionizer-builder:bookworm \
		--volume $(RUSTUP_HOME):/opt/rustup:ro --volume $(CARGO_HOME):/opt/cargo \
		--volume $(CURDIR)/.cache/image/target:/tmp/target $(IMAGE_CA) \
		-t $(IMAGE) -f Containerfile .
	@$(BUILDAH) images --format '{{.Name}}:{{.Tag}} {{.Size}}' $(IMAGE)
	mkdir -p $(dir $@) && touch $@

clean:
	rm -rf $(VENV) $(OUT) build dist native/target bench/data bench/results .pytest_cache .hypothesis
