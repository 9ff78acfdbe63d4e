# Entry points. See README.md.
.PHONY: setup demo demo-down bench test lint docs lock app-lock hosts-down

demo:             ## the main job: a local test host, Pebble, site.yml, the app answering over HTTPS
	scripts/demo up

demo-down:        ## take the demo host down
	scripts/demo down

setup:            ## host packages and the .venv with the pinned tools
	scripts/setup

bench:            ## benchmarks side by side (bench/run.py, about 12 min on an idle machine): bench/results/latest.{json,md,png}
	scripts/setup >/dev/null && . .venv/bin/activate && python bench/run.py

test:             ## everything CI runs: set-up, lint, app tests, every Molecule scenario on test hosts
	scripts/test

lint: setup       ## yamllint, ansible-lint and the role READMEs' check against their specs
	.venv/bin/yamllint --strict . && .venv/bin/ansible-lint --offline -q && scripts/role-docs --check

docs: setup       ## regenerate the generated part of roles/*/README.md from meta/argument_specs.yml
	scripts/role-docs

lock:             ## re-lock requirements.txt from requirements.in
	python3 -m venv .cache/pip-tools && .cache/pip-tools/bin/pip install -q pip-tools
	.cache/pip-tools/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o requirements.txt requirements.in

app-lock:         ## re-lock app/requirements*.txt from app/requirements*.in, for Python 3.10 to 3.13
	python3 -m venv .cache/uv && .cache/uv/bin/pip install -q uv
	cd app && ../.cache/uv/bin/uv pip compile -q --universal --python-version 3.10 --generate-hashes \
	  --no-header -o requirements.txt requirements.in
	cd app && ../.cache/uv/bin/uv pip compile -q --universal --python-version 3.10 --generate-hashes \
	  --no-header -o requirements-dev.txt requirements-dev.in

hosts-down:       ## stop every test host and remove the bridge (after an interrupted run)
	python3 scripts/testhost down --all
