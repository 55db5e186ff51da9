"""moragent: Mixture-of-Roles agents on small language models."""

__version__ = "0.1.0"
