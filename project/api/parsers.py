"""The API's JSON parser: DRF's, with JSON nested too deeply for Python's decoder refused as 400.

The standard library decoder recurses once per nesting level and raises RecursionError (not a
ValueError, which DRF turns into a 400) on a body like `[[[[...]]]]` of some thousand levels,
well under the body size limit; without this, such a body was a 500.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type=media_type, parser_context=parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
