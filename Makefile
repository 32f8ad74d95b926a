# Stockroom: `make run` starts the shop, `make test` runs every test. Both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
ENV_FILE := var/services.env
WITH_ENV := set -a && . $(ENV_FILE) && set +a &&
PORT ?= 8000

.PHONY: prepare run two-nodes test setup services browser loadgen proxies bench lint format check stop-embedded

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP) services

services: $(STAMP)
	@$(PY) bin/services.py --write $(ENV_FILE)

# What the shop needs before it starts (each step idempotent): schema, static files, schedules, demo data.
prepare: setup
	@$(WITH_ENV) $(PY) manage.py migrate --noinput
	@$(WITH_ENV) $(PY) manage.py collectstatic --noinput --verbosity 0
	@$(WITH_ENV) $(PY) manage.py setup_schedules
	@$(WITH_ENV) $(PY) manage.py load_demo_data

run: prepare
	@echo ""
	@echo "  shop      http://127.0.0.1:$(PORT)/"
	@echo "  admin     http://127.0.0.1:$(PORT)/admin/   (staff@example.com / stockroom-demo)"
	@echo "  API docs  http://127.0.0.1:$(PORT)/api/docs/"
	@echo "  metrics   http://127.0.0.1:$(PORT)/metrics  (worker :9101, relay :9102; docs/operating.md)"
	@echo "  Ctrl-C stops every process."
	@echo ""
	@$(WITH_ENV) PORT=$(PORT) exec $(VENV)/bin/honcho start --no-prefix -f Procfile

# The shop on two web nodes behind Debian's HAProxy (docs/scaling.md): HAProxy on PORT, gunicorn
# nodes on PORT+1 and PORT+2 (each its own control socket var/run/web<n>.ctl and metrics folder),
# two Celery workers, beat, the relay and the webhooks worker; pool sizes and the connection
# arithmetic in bin/two-nodes. Same setup as `make run`; Ctrl-C stops every process.
two-nodes: prepare proxies
	@echo ""
	@echo "  shop      http://127.0.0.1:$(PORT)/   (HAProxy; X-Stockroom-Node names the node that answered)"
	@echo "  nodes     http://127.0.0.1:$$(($(PORT) + 1))/  http://127.0.0.1:$$(($(PORT) + 2))/   (metrics: each node's /metrics)"
	@echo "  admin     http://127.0.0.1:$(PORT)/admin/   (staff@example.com / stockroom-demo)"
	@echo "  Ctrl-C stops every process."
	@echo ""
	@$(WITH_ENV) PORT=$(PORT) exec bin/two-nodes

# The browser tests (tests/e2e) drive Debian's chromium; Playwright's own download is not used.
# The benchmark (and its one-second smoke in the tests) drives gunicorn with Debian's wrk.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

loadgen:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

# Past one machine (tests/scale, docs/scaling.md): Debian's HAProxy in front of two web nodes,
# Debian's PgBouncer in front of PostgreSQL. Installed, never started as services.
proxies:
	@test -x /usr/sbin/haproxy -a -x /usr/sbin/pgbouncer || (apt-get update -qq && apt-get install -y -qq haproxy pgbouncer)

test: setup browser loadgen proxies lint
	@$(WITH_ENV) $(PY) manage.py collectstatic --noinput --verbosity 0
	@$(WITH_ENV) $(PY) -m pytest $(PYTEST_ARGS)

bench: setup loadgen
	@$(WITH_ENV) $(PY) -m tests.bench $(BENCH_ARGS)

# The migration linter runs sqlmigrate, so it needs the database: `services` finds or starts it.
lint: services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	@$(WITH_ENV) $(PY) manage.py lint_migrations

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check: $(STAMP)
	@$(WITH_ENV) $(PY) manage.py check
	@$(WITH_ENV) $(PY) manage.py makemigrations --check --dry-run

stop-embedded:
	$(PY) bin/services.py --stop
