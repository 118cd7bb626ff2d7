"""Skiff: a container engine that rebuilds the Docker Engine architecture in Python."""

__version__ = "0.1.0"
