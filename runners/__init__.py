"""Thin entry points and the local stack: data generator, Azurite, launch helpers."""
