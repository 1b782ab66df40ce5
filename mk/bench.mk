# make bench: the package benchmarks (token cache, JWT validation), then the
# system against its floors (hello-world, bare two-hop) in one run, with a
# renewal run; writes e2e/results/bench.md and bench.png and prints the table.
# The load generator is built in (e2e/loadgen_test.go): nothing to install.
# Knobs: BENCH_ROUNDS, BENCH_CELL, BENCH_RENEWAL, BENCH_LOG, BENCH_CLIENT
# (see e2e/bench_test.go). Whole target: under 3 minutes on 2 cores.
PKG_BENCHTIME ?= 300ms

## bench: package benchmarks, then the system vs hello-world and a bare two-hop (table + chart in e2e/results)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(PKG_BENCHTIME) -count=1 ./pkg/m2m ./pkg/jwtauth
	cd e2e && $(GO) test -run '^$$' -bench '^BenchmarkSystem$$' -benchtime 1x -count=1 -timeout 10m .
