# The two commands: `make demo` (vigil on a local control plane and a real node, no cluster
# needed) and `make test` (installs what it needs, then runs every test). Both run a kubelet and
# containerd (tests/node/): root, network namespaces, cgroups. Tools are cached in
# $VIGIL_CACHE (default ~/.cache/vigil), outside the repo.

.PHONY: demo test test-unit test-e2e lint tools crds build bench chaos

demo:
	tests/demo.sh

test: tools lint test-unit test-e2e

tools:
	tests/node/tools.sh

# actionlint (installed by `make tools`) checks .github/workflows, shellcheck included.
ACTIONLINT ?= $(or $(VIGIL_CACHE),$(HOME)/.cache/vigil)/bin/current/actionlint

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --features e2e -- -D warnings
	$(ACTIONLINT)

test-unit:
	cargo test --workspace

test-e2e:
	tests/e2e.sh

build:
	cargo build --workspace --bins

# vigil vs Redis Sentinel, and the operator's footprint (not part of `make test`): prints a table
# and writes bench/results/<date>.md. BENCH_RUNS=3 for a quick look (see tests/bench/main.rs).
bench:
	tests/bench.sh

# Every partition scenario many times (CHAOS_RUNS, default 10), not part of `make test`: prints a
# table per scenario and writes bench/results/<date>-chaos.md.
chaos:
	tests/chaos.sh

# Regenerate the CRD files from the API types (a test fails when they drift).
crds:
	cargo run --quiet -- crd --dir crds
	cargo run --quiet -- crd --dir charts/vigil/crd
