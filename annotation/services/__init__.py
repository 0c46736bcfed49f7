"""Writes of the annotation app, one module per concern.

`services` is a package rather than one `services.py` because the concerns (projects
and members, imports, the task queue, judgments) are large and independent; every
public service is still importable as `annotation.services.<module>.<service>`.
"""
