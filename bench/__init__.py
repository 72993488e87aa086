"""The benchmark suite (`./scripts/bench.sh`); see bench/README.md."""
