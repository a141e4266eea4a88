"""A Python client for lanes: submit tasks over HTTP or AMQP, follow and steer jobs, and run
an external executor for the `webhook` task."""

from .amqp import AmqpSubmitter, Unroutable
from .client import FINAL_STATES, Client, Job, JobList
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    LanesError,
    NotFound,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .executor import Executor, InvalidSignature, Report, SignatureVerifier, sign, signature
from .ids import uuid7

__version__ = "0.1.0"

__all__ = [
    "AmqpSubmitter",
    "BadRequest",
    "Client",
    "Conflict",
    "Executor",
    "FINAL_STATES",
    "Forbidden",
    "InvalidSignature",
    "Job",
    "JobList",
    "LanesError",
    "NotFound",
    "Report",
    "SignatureVerifier",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Unroutable",
    "sign",
    "signature",
    "uuid7",
]
