"""Benchmarks that hold Chronos against bare Temporal on the same dev server in the same run (issue 7).

One command per target (`python -m bench.throughput`, `bench.lateness`, `bench.schedules`,
`bench.api_latency`, `bench.workers`); each starts what it needs and prints a table with the ratio.
"""
