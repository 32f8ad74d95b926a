"""`?profile=1` on any page or API request: a pyinstrument profile of it, for staff only.

Who may: whoever `settings.PROFILING_ALLOWED` (a dotted path to `may_profile(request) -> bool`)
says: in this shop users.permissions.may_profile, staff rights from the session or from a bearer
key with the `staff` scope (checked before DRF authenticates, so the whole view is inside the
profile). For
anyone else the parameter is ignored: the request runs unprofiled and gets its normal response,
so the parameter neither slows the shop down for strangers nor tells them it exists.

The request really runs (a POST places its order); the response is replaced by pyinstrument's
HTML page, with the original status in `X-Profiled-Status`. The page needs inline script and
style, so it carries its own Content-Security-Policy (the CSP middleware keeps a view's own).
PROFILING_ENABLED=0 turns the feature off.

Sits right after AuthenticationMiddleware: the session user is known, and everything from there
to the view (messages, CSRF checks of DRF, the view, serializers, SQL) is in the profile.
"""

import logging

from django.conf import settings
from django.http import HttpResponse
from django.utils.module_loading import import_string

logger = logging.getLogger("stockroom.profiling")

PROFILE_PARAM = "profile"
PROFILE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SAMPLE_INTERVAL = 0.001  # seconds: fine enough for a 20 ms request


class ProfileMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.enabled = settings.PROFILING_ENABLED
        # Who may profile is the apps' decision (staff rights live in users.permissions); the
        # platform only learns it through the callable the setting names.
        self.may_profile = import_string(settings.PROFILING_ALLOWED)

    def __call__(self, request):
        # The substring test first: most requests have no query string to parse at all.
        if not (
            self.enabled
            and PROFILE_PARAM in request.META.get("QUERY_STRING", "")
            and request.GET.get(PROFILE_PARAM) == "1"
            and self.may_profile(request)
        ):
            return self.get_response(request)
        from pyinstrument import Profiler

        profiler = Profiler(interval=SAMPLE_INTERVAL)
        profiler.start()
        try:
            response = self.get_response(request)
            if getattr(response, "streaming", False):
                response.streaming_content = list(response.streaming_content)  # profile the rendering too
            elif hasattr(response, "render") and callable(response.render) and not response.is_rendered:
                response.render()
        finally:
            profiler.stop()
        logger.info(
            "profiled %s %s (%s)",
            request.method,
            request.path,
            response.status_code,
            extra={"profiled_by": getattr(getattr(request, "user", None), "pk", None)},
        )
        page = HttpResponse(profiler.output_html(), content_type="text/html; charset=utf-8")
        page["X-Profiled-Status"] = str(response.status_code)
        page["Content-Security-Policy"] = PROFILE_CSP
        page["Cache-Control"] = "no-store"
        return page
