# Two commands set everything up on a fresh machine: `make run` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
AZURITE := node_modules/.bin/azurite-blob

.PHONY: install run test test-fast bench train-real loco stop clean help
.PHONY: dashboard chromium
DASHBOARD_OUTPUTS ?= out/batch out/batch_scored out/stream

help:
	@echo "make run     - set up, start Azurite and the local Event Hubs endpoint, run the batch job from azfs:// into Delta"
	@echo "               tables (twice: the second run ingests only a newly landed file), train a small sentiment"
	@echo "               model and score with it, run the streaming job from the hub, check the counts"
	@echo "make test    - set up and run the whole test suite (unit, composite, end to end on local services)"
	@echo "make bench   - the batch job vs the pyarrow reference at 200k and 1M reviews, and the streaming job vs"
	@echo "               the raw azure-eventhub consumer at 20k and 100k events, training and scoring (bench/results/)"
	@echo "make train-real - the batch job over ../shared/data/amazon and amazon2023, then the sentiment model refitted"
	@echo "               on all labelled reviews (out/model_real/), and the leave-one-category-out table"
	@echo "make loco    - leave-one-category-out evaluation of the exported ensemble's whole procedure next to the tf-idf baseline,"
	@echo "               both folders of ../shared/data (bench/results/loco/report.md; python -m training.loco --help)"
	@echo "make dashboard - serve the dashboard on the tables make run wrote ($(DASHBOARD_OUTPUTS)) at"
	@echo "               http://127.0.0.1:8050/ (DASHBOARD_ARGS='--port 8051' to change; --help lists its options)"
	@echo "make stop    - stop the Azurite and the Event Hubs endpoint started by make run"
	@echo "make clean   - remove outputs and local state (keeps .venv and node_modules)"

$(STAMP): setup.py
	@test -x $(PY) || { echo "[install 1/3] creating the virtual environment $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "[install 2/3] upgrading pip"
	@$(PY) -m pip install --quiet --upgrade pip
	@echo "[install 3/3] installing the project and its dependencies (Beam, TensorFlow, delta-rs, ...; several minutes the first time)"
	@$(PY) -m pip install --quiet -e ".[dev,training]"
	@touch $(STAMP)

$(AZURITE): package.json
	@echo "[install] Azurite (npm install, the local Azure Blob stand-in)"
	@npm install --no-audit --no-fund --loglevel=error
	@touch $(AZURITE)

install: $(STAMP) $(AZURITE)

run: install
	$(PY) -m runners.demo

# two pytest workers (pytest-xdist), a test file per worker at a time: most end-to-end tests wait on
# services and Beam's start-up, so the suite takes ~10 minutes on 2 cores instead of ~20 in one process
PYTEST_WORKERS ?= 2
test: install
	$(PY) -m pytest tests -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --durations=10

# The browser tests need Debian's chromium and chromium-driver: installed here when missing and root (CI);
# otherwise those tests fail and say how to install them.
test: chromium
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (apt-get) for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "chromium / chromium-driver missing and not root on Debian: the dashboard's browser tests will fail" \
	    "(sudo apt-get install chromium chromium-driver)"; fi

dashboard: install
	$(PY) -m beam_pipeline.dashboard $(addprefix --output=,$(DASHBOARD_OUTPUTS)) $(DASHBOARD_ARGS)

test-fast: install
	$(PY) -m pytest tests -q -p no:cacheprovider -m "not e2e"

bench: install
	$(PY) bench/run_bench.py
	$(PY) bench/stream_bench.py
	$(PY) bench/train_bench.py

# the batch job over both real-data folders, then the model refitted on every labelled review (--split all);
# its figure on unseen categories is the leave-one-category-out table printed after it (make loco measures it)
train-real: install
	$(PY) -m training --reviews='../shared/data/amazon*/reviews/*.jsonl.gz' \
	    --products='../shared/data/amazon*/metadata/*.jsonl.gz' --split=all --output=out/model_real
	@echo "Leave-one-category-out figures (the headline; measured by 'make loco', bench/results/loco/report.md):"
	@cat bench/results/loco/report.md

# leave-one-category-out over ../shared/data/amazon + amazon2023 (python -m training.loco --help): the exported
# ensemble, the linear model and the baseline in every fold; ~2.5-3 h in one process on 2 busy cores
loco: install
	$(PY) -m training.loco --output=out/loco --inner_folds=2 --no_baseline_current
	mkdir -p bench/results/loco && cp out/loco/report.md out/loco/report.json bench/results/loco/

stop:
	-test -x $(PY) && $(PY) -m runners.local_stack azurite stop
	-test -x $(PY) && $(PY) -m runners.local_stack eventhubs stop

clean: stop
	rm -rf out .local bench/work
