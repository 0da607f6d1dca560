# The two commands of the README. Both work on a fresh Debian 12 with Rust.
.PHONY: demo test deps lint cross

# The whole pipeline on this machine; DEMO_SECONDS=20 make demo stops by itself.
demo:
	scripts/demo.sh

# Installs what the tests need (skipping what is there), then runs every test.
test: deps
	cargo build --workspace --bins
	cargo test --workspace

deps:
	scripts/install-test-deps.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
