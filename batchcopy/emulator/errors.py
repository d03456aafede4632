"""Modelled service errors. Raised by model.py (and auth/quotas/faults), turned into
HTTP by wire.py: status + `x-amzn-ErrorType: <code>` + body `{"message": ...}`."""

from __future__ import annotations


class ServiceError(Exception):
    code = "InternalServerException"
    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class ValidationException(ServiceError):
    code, status = "ValidationException", 400


class BadRequestException(ServiceError):
    code, status = "BadRequestException", 400


class AccessDeniedException(ServiceError):
    code, status = "AccessDeniedException", 403


class ResourceNotFoundException(ServiceError):
    code, status = "ResourceNotFoundException", 404


class NotAcceptableException(ServiceError):
    code, status = "NotAcceptableException", 406


class ConflictException(ServiceError):
    code, status = "ConflictException", 409


class ServiceQuotaExceededException(ServiceError):
    code, status = "ServiceQuotaExceededException", 402


class ThrottlingException(ServiceError):
    code, status = "ThrottlingException", 429


class InternalServerException(ServiceError):
    code, status = "InternalServerException", 500


class ServiceUnavailableException(ServiceError):
    """Not modelled; AWS front ends answer 503 ServiceUnavailable."""

    code, status = "ServiceUnavailableException", 503


# Authentication failures: not in the service model; AWS JSON services answer 403.
class InvalidSignatureException(ServiceError):
    code, status = "InvalidSignatureException", 403


class UnrecognizedClientException(ServiceError):
    code, status = "UnrecognizedClientException", 403


class ExpiredTokenException(ServiceError):
    code, status = "ExpiredTokenException", 403


class MissingAuthenticationTokenException(ServiceError):
    code, status = "MissingAuthenticationTokenException", 403
