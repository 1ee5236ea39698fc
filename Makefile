# The two set-up commands from the README.
.PHONY: dev check install

# (a) Run the shopping-cart sample behind the sidecar on the embedded journal.
dev: install
	.venv/bin/larder dev samples/shopping-cart

# (b) Install everything, provision the test servers and run every test.
check:
	scripts/check.sh

install:
	scripts/install.sh
