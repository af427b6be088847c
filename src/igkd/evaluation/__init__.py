"""How models are measured: accuracy, corruptions and robustness, statistics, size and latency, the run report."""
