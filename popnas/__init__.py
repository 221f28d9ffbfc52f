"""popnas: Pareto-optimal progressive neural architecture search (POPNASv3), local or on Kubernetes."""

__version__ = "0.1.0"
