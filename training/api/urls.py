"""Routes of the training API (mounted under /api/v1/)."""

urlpatterns: list = []
