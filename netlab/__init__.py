"""netlab: Kubernetes networking on real kernel objects, on one Linux machine."""

__version__ = "0.1.0"
