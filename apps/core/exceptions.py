"""Domain exceptions. Services raise these; the edges (API, pages, consumers) turn them into
responses with a stable `code` and a human `detail`."""


class DomainError(Exception):
    code = "invalid"
    status = 400

    def __init__(self, detail: str, *, code: str | None = None, fields: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.fields = fields


class NotFound(DomainError):
    code = "not_found"
    status = 404


class PermissionDenied(DomainError):
    code = "permission_denied"
    status = 403


class Conflict(DomainError):
    code = "conflict"
    status = 409
