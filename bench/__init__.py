"""Benchmarks of minibroker, minilog and real brokers on the same workloads."""
