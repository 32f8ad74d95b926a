"""The benchmark's ceiling: a trivial view (mounted only when BENCH_ENDPOINTS is on)."""

from django.http import HttpResponse


def trivial(request):
    return HttpResponse(b"ok", content_type="text/plain")
