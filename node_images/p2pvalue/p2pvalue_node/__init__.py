"""P2Pvalue node: a federated real-time collaboration server."""

__version__ = "0.1.0"
