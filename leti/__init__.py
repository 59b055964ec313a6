"""leti: estimate neural-network inference latency on phones and boards without running it there."""

__version__ = "0.1.0"
