"""Thin page views of the annotation app, one module per area."""
