# The two set-up commands from the README, and the shorter loops for development.
.PHONY: dev check install lint unit lock

# (a) Run the shopping-cart sample behind the sidecar on the embedded journal.
dev: install
	.venv/bin/larder dev samples/shopping-cart

# (b) Install everything, provision the test servers and run every test.
check:
	scripts/check.sh

install:
	scripts/install.sh

# Lint, types and layer contracts only (seconds; no servers).
lint: install
	scripts/lint.sh

# The unit tier only (no servers).
unit: install
	.venv/bin/python -m pytest -p no:cacheprovider tests/unit -q

# Rewrite requirements/*.lock after a dependency changed (ARGS=--upgrade to move every
# pin to the newest allowed, ARGS="--upgrade-package NAME" for one).
lock: install
	scripts/lock.sh $(ARGS)
