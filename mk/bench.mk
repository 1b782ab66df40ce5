# make bench: the package benchmarks (token cache, JWT validation), then the
# system against its floors (hello-world, bare two-hop) in one run, with a
# renewal run; writes e2e/results/bench.md and bench.png and prints the table.
# The load generator is built in (e2e/loadgen_test.go): nothing to install.
# Knobs: BENCH_ROUNDS, BENCH_CELL, BENCH_RENEWAL, BENCH_LOG, BENCH_CLIENT
# (see e2e/bench_test.go). Whole target: under 3 minutes on 2 cores.
PKG_BENCHTIME ?= 100ms

## bench: package benchmarks, then the system vs hello-world and a bare two-hop (table + chart in e2e/results)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(PKG_BENCHTIME) -count=1 ./pkg/m2m ./pkg/jwtauth ./bench
	cd e2e && $(GO) test -run '^$$' -bench '^BenchmarkSystem$$' -benchtime 1x -count=1 -timeout 10m .

## bench-wrk: the same run driven by wrk (installs wrk with apt-get if missing), to cross-check the built-in load generator
bench-wrk:
	@command -v wrk >/dev/null || { echo "installing wrk"; (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null; }
	cd e2e && BENCH_CLIENT=wrk BENCH_OUT=$${BENCH_OUT:-/tmp/m2m-bench-wrk} $(GO) test -run '^$$' -bench '^BenchmarkSystem$$' -benchtime 1x -count=1 -timeout 10m .

.PHONY: bench bench-wrk
