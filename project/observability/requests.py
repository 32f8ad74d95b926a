"""django-prometheus' per-request metrics, the same series for less work per request.

`PrometheusAfterMiddleware` records exactly what django-prometheus' own does (it is a subclass,
and the metrics are the library's), with three savings on the path every request takes:

- a labelled series is looked up in a plain dict: prometheus_client's `labels()` validates the
  names and takes a lock on every call, about three times the price of the increment itself;
- the transport (`is_secure()`) is worked out once per request, not in two hooks;
- two headers are read from `META`, so the request never builds `request.headers` for them.

And one difference: every label comes from a known set, since each new value is a new series kept
by every worker until it restarts, scraped ever after. The library labels latency with the
method as the client sent it, so one request with a made-up method made new series; here a method,
a status or a charset outside its set is `other` in every series (the library says
`<invalid method>` in some). View names come from the URL conf, transports are http or https.
"""

from http import HTTPStatus

from django_prometheus import middleware as django_prometheus
from django_prometheus.utils import Time, TimeSince

UNNAMED_VIEW = "<unnamed view>"
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})
STATUSES = {status.value: str(status.value) for status in HTTPStatus}
CHARSETS = frozenset({"utf-8", "us-ascii", "iso-8859-1"})


def _charset(charset) -> str:
    charset = str(charset).lower()
    return charset if charset in CHARSETS else OTHER


class PrometheusAfterMiddleware(django_prometheus.PrometheusAfterMiddleware):
    def __init__(self, get_response):
        super().__init__(get_response)
        # (metric, label values in the metric's order) -> its child. Label values come from small
        # sets (methods, statuses, view names, charsets), which the metric keeps anyway.
        self._series: dict = {}

    def _series_of(self, metric, *values):
        key = (metric, values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*values)
        return series

    def _method(self, request):
        method = request.method
        return method if method in METHODS else OTHER

    def process_request(self, request):
        metrics = self.metrics
        transport = request._prometheus_transport = self._transport(request)
        method = self._method(request)
        self._series_of(metrics.requests_by_method, method).inc()
        self._series_of(metrics.requests_by_transport, transport).inc()
        # Mimic the behaviour of the deprecated "Request.is_ajax()" method.
        if request.META.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest":
            metrics.requests_ajax.inc()
        metrics.requests_body_bytes.observe(int(request.META.get("CONTENT_LENGTH") or 0))
        request.prometheus_after_middleware_event = Time()

    def process_view(self, request, view_func, *view_args, **view_kwargs):
        resolver_match = getattr(request, "resolver_match", None)
        if resolver_match is None:
            return
        transport = getattr(request, "_prometheus_transport", None) or self._transport(request)
        self._series_of(
            self.metrics.requests_by_view_transport_method,
            resolver_match.view_name or UNNAMED_VIEW,
            transport,
            self._method(request),
        ).inc()

    def process_response(self, request, response):
        metrics = self.metrics
        method = self._method(request)
        view = self._get_view_name(request)
        status = STATUSES.get(response.status_code, OTHER)
        self._series_of(metrics.responses_by_status, status).inc()
        self._series_of(metrics.responses_by_status_view_method, status, view, method).inc()
        if hasattr(response, "charset"):
            self._series_of(metrics.responses_by_charset, _charset(response.charset)).inc()
        if getattr(response, "streaming", False):
            metrics.responses_streaming.inc()
        if hasattr(response, "content"):
            metrics.responses_body_bytes.observe(len(response.content))
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is not None:
            self._series_of(metrics.requests_latency_by_view_method, view, method).observe(TimeSince(started))
        else:
            metrics.requests_unknown_latency.inc()
        return response

    def process_exception(self, request, exception):
        """The library's, with the method from its known set (the library labels the latency with
        the method as sent, like its process_response)."""
        metrics = self.metrics
        self._series_of(metrics.exceptions_by_type, type(exception).__name__).inc()
        resolver_match = getattr(request, "resolver_match", None)
        if resolver_match is not None:
            self._series_of(metrics.exceptions_by_view, resolver_match.view_name or UNNAMED_VIEW).inc()
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is not None:
            series = self._series_of(
                metrics.requests_latency_by_view_method, self._get_view_name(request), self._method(request)
            )
            series.observe(TimeSince(started))
        else:
            metrics.requests_unknown_latency.inc()
