"""Sweep launcher and host scripts: python -m launch.sweep (see launch/README.md)."""
