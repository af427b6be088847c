"""The paper's experiments: plans of student runs, a resumable/shardable runner, per-run analyses and the report."""
