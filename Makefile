# halab: build the lab with `make lab`, prove it with `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
BIN         := $(VENV)/bin
LABCTL      := lab/labctl
LOCK        := requirements/controller.lock
APP_LOCK    := app/requirements-dev.lock
INVENTORY   := inventory/lab/hosts.yml
PAGE_VENDOR := roles/frontend/vendor
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

# Host packages the lab driver and the tests need (Debian names).
HOST_PACKAGES := systemd-container mmdebstrap nftables iproute2 openssh-client \
                 python3-venv redis-server jq curl vagrant vagrant-libvirt prometheus \
                 chromium chromium-driver shellcheck

.PHONY: help deps venv page-deps lab provision test lint unit lab-test molecule failover infra browser down status lock bench

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Some host packages are there only for their tools (promtool, redis-server for
# the unit tests): a policy-rc.d keeps their services from starting on the host.
deps: venv ## host packages (apt) and the pinned Python tools (.venv)
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing host packages: $$missing"; \
	  apt-get update -q; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; rc=$$?; \
	  rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

venv: $(VENV)/.installed page-deps

# The page's chart library (uPlot) from npm, exactly as package-lock.json pins it (integrity
# hash); the frontend role copies its dist files. npm ci again only when the lock changes.
page-deps: $(PAGE_VENDOR)/node_modules/.package-lock.json ## the page's chart library (npm ci, pinned by its lock)

$(PAGE_VENDOR)/node_modules/.package-lock.json: $(PAGE_VENDOR)/package-lock.json
	@# npm only where there is none: Debian's would replace a newer Node.js that brings its own
	@command -v npm >/dev/null || { echo "installing npm (apt)"; apt-get update -q && apt-get install -y -q --no-install-recommends npm; }
	cd $(PAGE_VENDOR) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(VENV)/.installed: $(LOCK) $(wildcard $(APP_LOCK)) $(wildcard app/requirements.lock)
	test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r $(LOCK) $(if $(wildcard $(APP_LOCK)),-r $(APP_LOCK))
	$(if $(wildcard app/pyproject.toml),$(BIN)/pip install -q --no-deps -e app)
	touch $@

# Not in make test: figures, not checks (it prints, never fails on them). halab's instance, a
# minimal uvicorn app, a minimal FastAPI app and the seed's Express server (app/bench/express:
# Node and its packages from npm, pinned by package-lock.json's integrity hashes; npm ci again
# only when the lock changes), one table; wrk from apt when missing. D=seconds per run.
BENCH_NODE := app/bench/express

bench: venv $(BENCH_NODE)/node_modules/.package-lock.json ## halab vs minimal uvicorn/FastAPI apps vs the seed's Express (wrk, loopback); on a lab, NGINX vs direct
	@command -v wrk >/dev/null || { echo "installing wrk (apt)"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; }
	$(PY) app/bench/bench.py $(if $(D),--duration $(D))
	@echo
	$(PY) -m tests.bench.lb_cost $(if $(D),--duration $(D))  # on the lab's nodes: says so when no lab is up

$(BENCH_NODE)/node_modules/.package-lock.json: $(BENCH_NODE)/package-lock.json
	@command -v npm >/dev/null || { echo "installing npm (apt)"; apt-get update -q && apt-get install -y -q --no-install-recommends npm; }
	cd $(BENCH_NODE) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

lab: deps ## boot the lab's nodes and provision them with playbooks/site.yml
	$(LABCTL) up
	$(MAKE) --no-print-directory provision
	@echo
	@echo "halab is up. Try (README.md, \"Break it\", has the rest):"
	@echo "  . .venv/bin/activate     # once per shell: ansible-playbook and the other tools"
	@echo "  curl -s http://$$($(PY) -c 'import lab.topology as t; print(t.load().public_address)')/api/health | jq"
	@echo "  ansible-playbook playbooks/stress.yml -e instance=1"
	@echo "  $(LABCTL) status        ssh app1        make down"

provision: ## run playbooks/site.yml on the running lab
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/site.yml

test: deps lint unit lab-test molecule browser ## lint, unit and lab tests, molecule (converge, idempotence, failover, verify), the page in Chromium

lint: venv ## yamllint, ansible-lint, ruff, mypy, vagrant validate
	$(BIN)/yamllint -s .
	$(if $(wildcard roles/*/tasks),$(BIN)/ansible-lint --profile production)
	$(BIN)/ruff check lab tests vagrant plugins roles/todo_api/files roles/nginx_lb/files
	$(BIN)/mypy
	shellcheck vagrant/vlab lab/labctl
	cd app && ../$(BIN)/ruff check . && ../$(BIN)/mypy
	cd app && ../$(BIN)/lint-imports
	promtool check rules roles/monitoring/files/halab.rules.yml roles/monitoring/files/dashboard.rules.yml
	promtool test rules roles/monitoring/files/tests/halab.rules.test.yml roles/monitoring/files/tests/dashboard.rules.test.yml
	vagrant validate --ignore-provider

unit: venv ## tests that need no lab (labctl's pure parts; the API against a real redis-server)
	$(BIN)/pytest -q tests/unit
	cd app && ../$(BIN)/pytest -q -rfEP  # -rfEP: failures and errors in the summary, and the figures the fuzz and paging tests print

lab-test: venv ## the lab itself: teardown leaves nothing, limits are enforced, up is idempotent
	$(BIN)/pytest -q tests/lab

# Molecule drives the lab: create (labctl up), converge (site.yml), idempotence,
# side_effect (tests/failover), verify (tests/infra). The lab is kept: make down.
molecule: venv ## molecule test on the lab (kept afterwards)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/molecule test --destroy=never

failover: venv ## the failover scenarios alone, on a provisioned lab (e.g. make failover K=seed)
	$(BIN)/pytest -q -rfEP tests/failover $(if $(K),-k "$(K)")

# Not in make test (it rebuilds the lab twice): the note of issue 12 shows a run.
scale-test: venv ## add an API node to a copy of topology.yml, see it serve, scraped and allowed (then back)
	$(BIN)/pytest -q -rfE tests/scale

infra: venv ## the testinfra checks alone, on a provisioned lab
	$(BIN)/pytest -q -rfE tests/infra --ansible-inventory=$(INVENTORY) -m "not idempotence"

browser: venv ## the page in headless Chromium against the lab (screenshots in artifacts/browser)
	$(BIN)/pytest -q -rfE -s tests/browser

down: venv ## stop the lab and leave the host as it was (the node image stays cached)
	$(LABCTL) down

status: ## what runs where
	$(LABCTL) status

lock: ## re-resolve requirements/controller.in into the lock
	rm -rf build/lockvenv && python3 -m venv build/lockvenv
	build/lockvenv/bin/pip install -q -r requirements/controller.in
	{ echo "# Generated by 'make lock' from controller.in: pip freeze of a clean venv. Do not edit."; \
	  build/lockvenv/bin/pip freeze --exclude-editable | sort; } > $(LOCK)

include vagrant/vagrant.mk
