# xray-score: the two README commands and the maintainers' jobs.
#   make demo     set up .venv, install, fetch a real labeled sample, score it, write reports
#   make test     set up .venv, install with test extras, lint, run the test suite
#   make models   retrain the shipped bundles from ../shared (data + weights)
#   make reports  regenerate reports/ from the shipped bundles on ../shared originals
#   make bench    run the benchmarks on ../shared (make bench-scale: memory and re-runs)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SHARED ?= ../shared
DATA    = $(SHARED)/data
WEIGHTS = $(SHARED)/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5
DEMO   ?= demo

.PHONY: install install-run test demo models reports bench bench-scale lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[test]"

install-run: $(BIN)/python
	$(BIN)/python -m pip install --quiet .

lint: install
	$(BIN)/ruff check toolkit tests benchmarks scripts

test: install lint
	bash scripts/ensure-chromium
	$(BIN)/python -m pytest -q -ra

demo: install-run
	$(BIN)/python scripts/fetch_demo_sample.py $(DEMO)/sample
	cd $(DEMO) && ../$(BIN)/xray-score batch sample --out results/batch.csv; \
	  code=$$?; [ $$code -eq 0 ] || [ $$code -eq 10 ] || exit $$code
	cd $(DEMO) && ../$(BIN)/xray-score compare sample --out results/compare.html \
	  --csv results/compare.csv
	@echo "demo: results in $(DEMO)/results/ (batch.csv, batch.html, compare.html, compare.csv)"

models: install
	$(BIN)/xray-score train baseline --data $(DATA)/chest_xray_224/train \
	  --val $(DATA)/originals --out models/baseline --pipeline pipelines/baseline.yaml
	$(BIN)/xray-score train cnn --data $(DATA)/chest_xray_224/train \
	  --val $(DATA)/originals --out models/cnn --pipeline pipelines/cnn.yaml --weights $(WEIGHTS)
	$(MAKE) reports
	$(BIN)/python scripts/model_card.py models/baseline --results reports/baseline-originals.csv
	$(BIN)/python scripts/model_card.py models/cnn --results reports/cnn-originals.csv

reports: install
	$(BIN)/xray-score -q evaluate $(DATA)/originals --model models/baseline --no-thumbnails \
	  --out reports/baseline-originals.html --csv reports/baseline-originals.csv
	$(BIN)/xray-score -q evaluate $(DATA)/originals --model models/cnn --no-thumbnails \
	  --out reports/cnn-originals.html --csv reports/cnn-originals.csv
	$(BIN)/xray-score -q compare $(DATA)/originals --baseline models/baseline --cnn models/cnn \
	  --out reports/compare-originals.html --csv reports/compare-originals.csv

bench: install
	$(BIN)/python benchmarks/bench_baseline.py --data $(DATA)/originals
	$(BIN)/python benchmarks/bench_cnn.py --data $(DATA)/originals --weights $(WEIGHTS)
	$(BIN)/python benchmarks/bench_limits.py
	$(BIN)/python benchmarks/bench_dask.py
	$(BIN)/python benchmarks/copy_shift.py --shared $(DATA)

bench-scale: install
	$(BIN)/python benchmarks/bench_scale.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info xray-score-results
