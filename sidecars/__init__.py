"""sidecars: reusable init and sidecar containers for an nginx Pod."""

__version__ = "0.1.0"
