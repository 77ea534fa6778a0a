"""The gRPC service layer: servicers, interceptors, server bootstrap, error wire format.

Public surface: :func:`serve` / :func:`run` / :class:`EngineServer` to run the
engine, and :func:`decode_error` / :class:`ErrorDetails` /
:func:`to_engine_error` for clients reading the engine's error details. The
generated stubs live in ``engine._proto.inventory.v1``.
"""

from engine.service.errors import DOMAIN, ErrorDetails, decode_error, to_engine_error
from engine.service.interceptors import REQUEST_ID_HEADER
from engine.service.server import EngineServer, run, serve

__all__ = [
    "DOMAIN",
    "REQUEST_ID_HEADER",
    "EngineServer",
    "ErrorDetails",
    "decode_error",
    "run",
    "serve",
    "to_engine_error",
]
