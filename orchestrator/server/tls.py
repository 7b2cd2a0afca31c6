"""Server-side TLS from `server.tls`: gRPC server credentials and the HTTP front door's
`ssl.SSLContext`, both built from the same PEM files."""

from __future__ import annotations

import ssl

import grpc

from orchestrator.config import TlsConfig


def grpc_server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port`; with client_ca, clients must present a
    certificate that CA signed (mutual TLS)."""
    pair = (tls.key.read_bytes(), tls.cert.read_bytes())
    if tls.client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=tls.client_ca.read_bytes(), require_client_auth=True
    )


def http_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The front door's context: the same certificate, and the same client check."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=str(tls.client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
