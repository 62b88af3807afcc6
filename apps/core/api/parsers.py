from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _clean(value, path="body") -> None:
    """PostgreSQL stores no NUL character and UTF-8 has no lone surrogates: a body holding
    either is refused with a 400 naming where, never a database error."""
    if isinstance(value, str):
        if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
            raise ParseError(f"{path}: NUL characters and unpaired surrogates are not allowed.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean(key, path)
            _clean(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _clean(item, f"{path}[{index}]")


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
            _clean(data)
        except RecursionError:
            # `[[[[…` a hundred thousand deep: json (and _clean) give up with a RecursionError,
            # which DRF does not catch (a 500); no API field nests deeper than a few levels.
            raise ParseError("JSON parse error - nested too deep.") from None
        return data
