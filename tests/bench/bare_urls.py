from django.urls import path

from project.bench_views import trivial
from project.http.health import healthz

urlpatterns = [path("_bench/trivial", trivial), path("healthz", healthz)]
