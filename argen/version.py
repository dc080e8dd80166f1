"""The package version, in a module of its own so that low layers (checkpoint records) can read it
without importing the ``argen`` package's lazy API."""

__version__ = "0.2.0"
