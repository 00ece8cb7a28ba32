"""TLS contexts for the targets' connections: one per distinct setting, shared by every connection that uses it."""

import ssl
import threading
import weakref
from functools import cache

from app.config.secret_files import TLS

# One SSLContext per distinct TLS setting, for as long as an engine holds it: each costs hundreds of KiB, and
# building one (the system's CA store loaded) holds the GIL for tens of milliseconds.
_tls_contexts: "weakref.WeakValueDictionary[TLS, ssl.SSLContext]" = weakref.WeakValueDictionary()
_tls_contexts_lock = threading.Lock()


def tls_context(tls: TLS) -> ssl.SSLContext:
    """The SSLContext of these settings, shared by every connection of every engine."""
    with _tls_contexts_lock:
        context = _tls_contexts.get(tls)
        if context is None:
            context = _tls_contexts[tls] = _new_tls_context(tls)
        return context


def _new_tls_context(tls: TLS) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca)
    context.check_hostname = tls.verify_identity  # the chain is verified either way
    # As PyMySQL does: the certificates MySQL and MariaDB generate fail Python 3.13's strict X.509 checks.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


@cache
def preferred_tls_context() -> ssl.SSLContext:
    """TLS when the server offers it, unverified (there is no CA to check with): what a target without ``tls`` gets,
    as PyMySQL gives it. Built once per process."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
