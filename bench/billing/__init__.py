"""Bill-run throughput and payment latency during a run (`python -m bench.billing.run`)."""
