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

.PHONY: devnet test lint bench fuzz clean restart-campaign

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

devnet: $(STAMP)
	$(BIN)/motus devnet up --preset $(PRESET) --validators $(VALIDATORS) --home $(DEVNET_HOME)

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

# Long restart campaign of real validator processes (docs/consensus.md, "Restart").
restart-campaign: $(STAMP)
	MOTUS_RESTART_CYCLES=$(RESTART_CYCLES) $(BIN)/pytest -q -s -p no:xdist tests/node/test_restart_campaign.py

lint: $(STAMP)
	$(BIN)/ruff check node consensus vm p2p genesis codec devnet bench tests
	$(BIN)/mypy consensus vm genesis codec

bench: $(STAMP)
	$(BIN)/python -m bench

# Every decoder of untrusted bytes, FUZZ_RUNS inputs each (coverage-guided with atheris;
# hours for the default 10^6: see docs/encoding.md). `make test` runs them briefly.
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --runs $(FUZZ_RUNS)

clean:
	rm -rf $(VENV) $(DEVNET_HOME) build *.egg-info
