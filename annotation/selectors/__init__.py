"""Reads of the annotation app (querysets, dicts, dataclasses; never writes)."""
