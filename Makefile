# Motus: every target sets up what it needs (.venv) first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
VALIDATORS ?= 4
DEVNET_HOME ?= .devnet
# devnet chain parameters: fast (30-block epochs, governance in seconds) or standard
PRESET ?= fast
FUZZ_RUNS ?= 1000000
RESTART_CYCLES ?= 200

CLIENTS_STAMP := tests/clients/node_modules/.installed-stamp

.PHONY: devnet test lint bench bench-fleet fuzz clean restart-campaign test-docker clients test-clients mempool-model browser test-explorer

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

devnet: $(STAMP)
	$(BIN)/motus devnet up --preset $(PRESET) --validators $(VALIDATORS) --home $(DEVNET_HOME)

test: $(STAMP) $(CLIENTS_STAMP) browser
	$(BIN)/pytest -q -n 2 --dist loadfile

# Third-party Ethereum clients (ethers, viem, Foundry's cast, solc-js, OpenZeppelin), pinned
# by tests/clients/package-lock.json, for the client conformance suite (docs/rpc.md).
$(CLIENTS_STAMP): tests/clients/package.json tests/clients/package-lock.json
	command -v npm >/dev/null || { test "$$(id -u)" = 0 && apt-get update -q && apt-get install -y -q nodejs npm; }
	cd tests/clients && npm ci --ignore-scripts --no-audit --no-fund
	touch $(CLIENTS_STAMP)

clients: $(CLIENTS_STAMP)

test-clients: $(STAMP) $(CLIENTS_STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile tests/clients

# Long restart campaign of real validator processes (docs/consensus.md, "Restart").
restart-campaign: $(STAMP)
	MOTUS_RESTART_CYCLES=$(RESTART_CYCLES) $(BIN)/pytest -q -s -p no:xdist tests/node/test_restart_campaign.py

# The Docker devnet with a real engine (docs/docker.md): as root, installs and starts one
# where missing; builds the base image once, the image offline (times: docs/docker.md).
test-docker: $(STAMP)
	MOTUS_DOCKER_TEST=1 $(BIN)/pytest -q -s -rs -p no:xdist tests/docker/test_compose.py

# The mempool model test with many more examples (docs/rpc.md, "Transaction pool").
MEMPOOL_MODEL_EXAMPLES ?= 2000
mempool-model: $(STAMP)
	MOTUS_MEMPOOL_MODEL_EXAMPLES=$(MEMPOOL_MODEL_EXAMPLES) $(BIN)/pytest -q -p no:xdist tests/node/test_mempool_model.py

lint: $(STAMP)
	$(BIN)/ruff check node cli light rpcclient consensus vm p2p genesis codec devnet bench tests
	$(BIN)/mypy consensus vm genesis codec rpcclient light

bench: $(STAMP)
	$(BIN)/python -m bench

# A fleet's store measured at 100,000 and 1,000,000 vehicles (docs/benchmarks.md, "A fleet's
# store at 100,000 and 1,000,000 vehicles"): ~7 GB in FLEET_DIR, kept for bench_attest_block.
FLEET_DIR ?= /tmp/motus-bench-fleet
bench-fleet: $(STAMP)
	$(BIN)/python -m bench.bench_fleet --vehicles 100000,1000000 --dir $(FLEET_DIR) --check

# Every decoder of untrusted bytes, FUZZ_RUNS inputs each (coverage-guided with atheris;
# hours for the default 10^6: see docs/encoding.md). `make test` runs them briefly.
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --runs $(FUZZ_RUNS)

clean:
	rm -rf $(VENV) $(DEVNET_HOME) build *.egg-info tests/clients/node_modules

# Debian's chromium for the explorer's browser tests (docs/explorer.md): installed where
# missing (as root; otherwise the command to run is printed and the target fails), never
# skipped. Playwright (dev extra) drives it; no `playwright install` download.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && apt-get update -q && apt-get install -y -q chromium; } \
		|| { echo "chromium is missing: run 'sudo apt-get install chromium'" >&2; exit 1; }

# The explorer in a real browser against a fast devnet; screenshots in build/screenshots/.
test-explorer: $(STAMP) browser
	$(BIN)/pytest -q -p no:xdist tests/explorer

