from django.urls import path

from project.bench_views import trivial

urlpatterns = [path("_bench/trivial", trivial)]
