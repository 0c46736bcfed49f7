"""Top-level URLs: pages, the REST API under /api/v1/, the OpenAPI schema and docs."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

api_v1 = [
    path("", include("annotation.api.urls")),
    path("", include("exports.api.urls")),
    path("", include("training.api.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("exports.urls")),
    path("", include("training.urls")),
    path("", include("annotation.urls")),
]

handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
