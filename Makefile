# sparsepipe developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

.PHONY: venv
venv: $(PY) ## Create the virtual environment (.venv)

.PHONY: install
install: $(PY) ## Build the release wheel and install it into .venv (pip install .)
	$(PIP) install -q --upgrade maturin
	$(PIP) install .

	$(PY) -c "import sparsepipe; print('sparsepipe', sparsepipe.__version__, 'kernels:', sparsepipe.available_isas()[-1])"

.PHONY: dev
dev: $(PY) ## Fast debug-profile build installed in editable mode
	$(PIP) install -q --upgrade maturin
	$(VENV)/bin/maturin develop --profile dev

.PHONY: test-deps
test-deps: $(PY)
	$(PIP) install -q "numpy>=1.21" "pytest>=7" "onnx>=1.14" "onnxruntime>=1.15" tokenizers pillow ruff \
		"fastapi>=0.100" "uvicorn>=0.23" "prometheus-client>=0.17" "python-multipart>=0.0.6" httpx \
		boto3 "moto>=5" openapi-spec-validator "mypy>=1.8" "tritonclient[http]" \
		"ray[serve,data]>=2.60,<3" "pandas>=1.5" "pyarrow>=12" "schemathesis>=4.1,<5" "hypothesis>=6.100"

.PHONY: demo
demo: install test-deps ## Install, then run the embedded default pipelines (sentiment, PII NER)
	$(PY) examples/demo.py

.PHONY: test-rust
test-rust: ## cargo test for every crate
	cargo test --workspace --quiet

.PHONY: stubtest
stubtest: test-deps ## Check python/sparsepipe/_engine.pyi against the installed binary module
	$(PY) -m mypy.stubtest sparsepipe._engine

.PHONY: test-python
test-python: test-deps ## pytest against the installed package
	$(PY) -m pytest -q tests

.PHONY: test
test: lint test-rust install stubtest test-python ## Everything CI runs: lint, cargo test, build + install, stub check, pytest

.PHONY: lint
lint: test-deps ## rustfmt, clippy and ruff
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(PY) -m ruff check python tests benches examples deploy tools
	$(PY) -m ruff format --check python tests benches examples deploy tools

.PHONY: format
format: test-deps ## Format Rust and Python code
	cargo fmt --all
	$(PY) -m ruff format python tests benches examples deploy tools

.PHONY: bench-kernels
bench-kernels: ## criterion benchmarks of the kernels (sparse vs dense vs tract)
	cargo bench -p sparsepipe-kernels --bench spmm

.PHONY: bench
bench: install test-deps ## Side-by-side BERT-base benchmark: sparsepipe vs onnxruntime (vs deepsparse)
	$(PY) benches/engine.py

.PHONY: clean
clean: ## Remove build outputs
	cargo clean
	rm -rf dist build $(VENV) .pytest_cache
