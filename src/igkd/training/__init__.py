"""Training: the shared loop, the teacher recipe and distillation."""
