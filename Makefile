# avrec: `make demo` and `make test` do all the set-up on a fresh machine (package registries only).
# Every pip install goes through constraints.txt, which pins torch (an unpinned torch pulls a CUDA build).

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.avrec-installed

.PHONY: install test lint demo bench bench-peers clean-venv

install: $(STAMP)

# Re-runs only when pyproject.toml or constraints.txt change (or the venv is gone).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[test,lint,audio,scale,onnx]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

# ruff and mypy with the settings in pyproject.toml (the versions pinned in the `lint` extra).
lint: install
	$(BIN)/ruff check src/avrec
	$(BIN)/mypy src/avrec

DEMO_PORT ?= 8000
demo: install
	$(BIN)/avrec demo --model-out runs/demo-model
	$(BIN)/avrec serve runs/demo-model --host 127.0.0.1 --port $(DEMO_PORT) --insecure-dev --config configs/demo-serve.toml

# Every benchmark script present (peers.py has its own target); each writes JSON + markdown under benchmarks/results/.
bench: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,bench]'
	@set -e; for f in $(filter-out benchmarks/peers.py,$(sort $(wildcard benchmarks/*.py))); do \
		echo "== $$f"; nice -n 10 $(BIN)/python $$f; \
	done

# Peer libraries live in their own venvs (.venv-lightfm, .venv-recbole, .venv-cornac), never in .venv or CI.
bench-peers: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,bench]'
	bash benchmarks/peers/setup_envs.sh
	nice -n 10 $(BIN)/python benchmarks/peers.py

clean-venv:
	rm -rf $(VENV)
