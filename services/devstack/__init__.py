"""The development harness: `make run`, and what the tests and the benchmarks use to start and
drive a whole system (servers, processes, probes, scenarios, chaos, neonize store files)."""
