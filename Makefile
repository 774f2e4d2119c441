# The two commands of the README: `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN ?= runs/demo

.PHONY: setup browser demo docs lint test test-slow clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Trains the tiny preset with the demo's overlay (configs/demo.yaml says what it trades) on the sample images
# bundled in the package (CPU, a few minutes), then measures it
# on the sample images it held out and writes the report: RUN/checkpoints, RUN/lightning_logs (TensorBoard),
# RUN/reconstructions/*.png, RUN/diffusers and RUN/eval/report.html; the last three lines say what was
# trained, how well it reconstructs images it never saw, and where to look.
demo: $(STAMP)
	$(BIN)/vaetrain fit --config configs/tiny.yaml --config configs/demo.yaml --trainer.default_root_dir $(RUN)
	$(BIN)/vaetrain eval $(RUN)/checkpoints/last.ckpt --held-out --metrics psnr,ssim --out $(RUN)/eval

# Debian's Chromium renders report.html in a test (tests/evaluation/test_report.py); installed once.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: chromium could not be installed (needs root and Debian's packages); the report screenshot test will be skipped"

# The documentation site (MkDocs + Material + mkdocstrings) into site/, strictly: a broken link, a missing
# page or an API name that no longer exists fails the build.
docs: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Lint and format (ruff, configured in pyproject.toml) before the tests: CI enforces both.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) browser lint
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf runs .pytest_cache site
