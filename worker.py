"""Builds and runs the Chronos worker."""
