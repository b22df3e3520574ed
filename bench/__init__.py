"""`make bench`: benchmarks that print figures and ratios against named baselines."""
