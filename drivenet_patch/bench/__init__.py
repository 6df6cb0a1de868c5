"""Benchmarks and timing behind `pdn bench`: world rendering, model throughput, the matmul ceiling."""
