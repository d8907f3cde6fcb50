"""``flowdsl bench`` and ``flowdsl bench-training``: speed, memory and likelihood benchmarks."""
