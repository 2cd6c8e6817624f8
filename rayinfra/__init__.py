"""rayinfra: the whole life of a model on Ray."""

__version__ = "0.1.0"
