"""DRF's content negotiation, with its answers remembered.

The answer depends only on the Accept header, the format asked for (`?format=` or a suffix) and
the classes of the view's renderers, yet DRF parses the header into media types and orders them
by precedence on every request: about 3% of the instructions of a cached catalogue read. Clients
send a handful of Accept headers (none, `*/*`, `application/json`), so the first answers are
kept. The header is client input: at most MAX_REMEMBERED answers are kept per process, later
ones are worked out each time, as DRF does.
"""

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation

MAX_REMEMBERED = 64
_NOT_ACCEPTABLE = object()


class RememberingContentNegotiation(DefaultContentNegotiation):
    # (Accept header, format, renderer classes) -> (index of the renderer, media type) or
    # _NOT_ACCEPTABLE. A dict's get and set are atomic, so threads share it without a lock.
    _answers: dict[tuple, tuple[int, str] | object] = {}

    def select_renderer(self, request, renderers, format_suffix=None):
        format = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        key = (request.META.get("HTTP_ACCEPT"), format, tuple(type(renderer) for renderer in renderers))
        answer = self._answers.get(key)
        if answer is None:
            try:
                renderer, media_type = super().select_renderer(request, renderers, format_suffix)
            except NotAcceptable:
                answer = _NOT_ACCEPTABLE
            else:
                index = next(i for i, candidate in enumerate(renderers) if candidate is renderer)
                answer = (index, media_type)
            if len(self._answers) < MAX_REMEMBERED:
                self._answers[key] = answer
        if answer is _NOT_ACCEPTABLE:
            raise NotAcceptable(available_renderers=renderers)
        index, media_type = answer
        return renderers[index], media_type
