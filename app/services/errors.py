"""Errors the services layer raises; the web, API and CLI layers turn them into answers."""


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message, fields=None, code=None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if code:
            self.code = code

    def as_dict(self):
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields}}


class ValidationError(ServiceError):
    status = 422
    code = "validation_error"

    def __init__(self, fields, message=None):
        if message is None:
            message = "; ".join(f"{k}: {v}" for k, v in fields.items()) or "invalid input"
        super().__init__(message, fields)


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class PermissionDenied(ServiceError):
    status = 403
    code = "forbidden"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class BadSignature(Unauthorized):
    """A signed request (webhook, module callback) whose signature does not check out."""

    code = "bad_signature"
