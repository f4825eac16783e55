# `make run` and `make test` set everything up on a fresh machine.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
BROKER  ?=
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS    := mosquitto socat chromium chromium-driver

.PHONY: run test lint bench sysdeps venv clean registry-demo run-xdomain

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Debian packages the tests drive for real (the mosquitto broker, socat for virtual serial boards,
# headless Chromium and its driver for the dashboard's browser tests).
sysdeps:
	@missing=""; for p in $(DEBS); do command -v $$p >/dev/null 2>&1 || [ -x /usr/sbin/$$p ] || dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# the packaged service is not wanted: tests start their own broker on a free port
	@-$(SUDO) systemctl disable --now mosquitto >/dev/null 2>&1 || true

test: $(STAMP) sysdeps
	$(VENV)/bin/ruff check shared gateway tools tests bench
	$(VENV)/bin/pytest -n 2 --dist loadfile

run: $(STAMP)
	$(VENV)/bin/thingledger run --liars 1 $(if $(BROKER),--broker $(BROKER))

registry-demo: $(STAMP)
	$(VENV)/bin/thingledger registry demo

run-xdomain: $(STAMP)
	$(VENV)/bin/thingledger xdomain demo

bench: $(STAMP) sysdeps
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check shared gateway tools tests bench

clean:
	rm -rf $(VENV) var
