"""dlkit: landmark deep-learning systems, runnable from a shell."""

__version__ = "0.1.0"
