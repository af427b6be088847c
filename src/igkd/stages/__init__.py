"""The stages of a run, planned once (plan.py) and walked by the pipeline, the dry run and preflight."""
