"""Routes of the exports API (mounted under /api/v1/)."""

urlpatterns: list = []
