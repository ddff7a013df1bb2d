# Two commands set everything up on a fresh machine: `make run` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
AZURITE := node_modules/.bin/azurite-blob

.PHONY: install run test test-fast bench train-real stop clean help

help:
	@echo "make run     - set up, start Azurite and the local Event Hubs endpoint, run the batch job from azfs:// into Delta"
	@echo "               tables (twice: the second run ingests only a newly landed file), train a small sentiment"
	@echo "               model and score with it, run the streaming job from the hub, check the counts"
	@echo "make test    - set up and run the whole test suite (unit, composite, end to end on local services)"
	@echo "make bench   - the batch job vs the pyarrow reference at 200k and 1M reviews, and the streaming job vs"
	@echo "               the raw azure-eventhub consumer at 20k and 100k events, training and scoring (bench/results/)"
	@echo "make train-real - the batch job over ../shared/data/amazon, then the sentiment model trained and evaluated"
	@echo "               on categories it never saw, next to two baselines (out/model_real/report.md)"
	@echo "make stop    - stop the Azurite and the Event Hubs endpoint started by make run"
	@echo "make clean   - remove outputs and local state (keeps .venv and node_modules)"

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,training]"
	touch $(STAMP)

$(AZURITE): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(AZURITE)

install: $(STAMP) $(AZURITE)

run: install
	$(PY) -m runners.demo

test: install
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=10

test-fast: install
	$(PY) -m pytest tests -q -p no:cacheprovider -m "not e2e"

bench: install
	$(PY) bench/run_bench.py
	$(PY) bench/stream_bench.py
	$(PY) bench/train_bench.py

train-real: install
	$(PY) -m training --reviews='../shared/data/amazon/reviews/*.jsonl.gz' \
	    --products='../shared/data/amazon/metadata/*.jsonl.gz' --output=out/model_real

stop:
	-test -x $(PY) && $(PY) -m runners.local_stack azurite stop
	-test -x $(PY) && $(PY) -m runners.local_stack eventhubs stop

clean: stop
	rm -rf out .local bench/work
