"""igkd: compress image classifiers by knowledge distillation guided by Integrated Gradients."""

__version__ = "0.1.0"
