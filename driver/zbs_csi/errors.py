"""Typed CSI errors: every failure leaves the driver as a gRPC status with a clear message."""

from __future__ import annotations

import grpc


class CsiError(Exception):
    """An error with the gRPC status code the CSI spec requires for it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.ALREADY_EXISTS, message)


def aborted(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.ABORTED, message)


def precondition(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.FAILED_PRECONDITION, message)


def out_of_range(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.OUT_OF_RANGE, message)


def exhausted(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def internal(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INTERNAL, message)


def unavailable(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.UNAVAILABLE, message)
