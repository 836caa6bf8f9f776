"""Moorage: durable AI agents on the Durable Task protocol."""

__version__ = "0.1.0"
