from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project import bench_views
from project.http import health
from project.observability import endpoint as metrics

handler400 = "project.http.error_views.bad_request"
handler403 = "project.http.error_views.permission_denied"
handler404 = "project.http.error_views.page_not_found"
handler500 = "project.http.error_views.server_error"

api_v1 = [
    path("", include("users.urls")),
    path("", include("inventory.urls")),
    path("", include("orders.urls")),
    path("webhooks/", include("project.webhooks.urls")),
]

urlpatterns = [
    # One password-change page for everyone: the account page's, which revokes the user's API keys
    # unless they untick it (the admin's own form would leave them valid).
    path("admin/password_change/", RedirectView.as_view(pattern_name="password_change")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    # Shopper pages (DESIGN.md §7): catalogue at the root, cart and orders, accounts.
    path("", include("inventory.urls_pages")),
    path("", include("orders.urls_pages")),
    path("accounts/", include("users.urls_pages")),
]

if settings.BENCH_ENDPOINTS:
    urlpatterns.append(path("_bench/trivial", bench_views.trivial))
