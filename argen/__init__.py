"""argen: autoregressive image generation under one API."""

__version__ = "0.1.0"
