"""Routes of the exports API (mounted under /api/v1/)."""

from rest_framework.routers import DefaultRouter

from exports.api.views import SnapshotViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register(
    r"projects/(?P<project_slug>[-a-zA-Z0-9_]+)/snapshots",
    SnapshotViewSet,
    basename="api-snapshot",
)

urlpatterns = [*router.urls]
