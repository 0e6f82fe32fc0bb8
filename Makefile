# Two commands: `make run` (serve) and `make test` (whole suite). Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= train,dev,postgres,mqtt,opcua
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: venv run test lint fmt bench clean

$(BIN)/defect-inspect: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[$(EXTRAS)]'
	touch $@

venv: $(BIN)/defect-inspect

run: venv
	$(BIN)/defect-inspect db upgrade
	$(BIN)/defect-inspect serve --host $(HOST) --port $(PORT) --demo

test: venv
	$(BIN)/ruff check app models tests
	$(BIN)/python -m pytest -q -ra

lint: venv
	$(BIN)/ruff check app models tests

fmt: venv
	$(BIN)/ruff format app models tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
