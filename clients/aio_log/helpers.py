"""aiokafka's `helpers.create_ssl_context`: a client TLS context from PEM files."""

import ssl

from ..tls import default_client_context


def create_ssl_context(*, cafile=None, capath=None, cadata=None, certfile=None, keyfile=None, password=None,
                       crlfile=None) -> ssl.SSLContext:
    """As aiokafka's: verify the server against `cafile`/`capath`/`cadata` (the system CAs if
    none), present `certfile`/`keyfile` for mutual TLS, check the host name."""
    ctx = default_client_context(cafile=cafile, certfile=certfile, keyfile=keyfile, password=password)
    if capath or cadata:
        ctx.load_verify_locations(capath=capath, cadata=cadata)
    if crlfile:
        ctx.load_verify_locations(crlfile)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx
