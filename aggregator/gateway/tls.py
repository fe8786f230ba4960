"""TLS contexts from PEM files, with the standard library's `ssl` alone.

Apart from `certs.py`, which makes certificates with `cryptography`: serving HTTPS needs only
these, so the aggregator with TLS on (`legionctl init`'s default) does not load `cryptography`
(its Rust library and modules, ~8 MiB of RSS; issue 17).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from legion.kernel.errors import ConfigError


def server_ssl_context(cert_path: str | Path, key_path: str | Path) -> ssl.SSLContext:
    """TLS ≥ 1.2 server context from PEM files; ConfigError naming the key when they are bad."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, p in (("security.certificate_path", cert_path), ("security.private_key_path",
                                                                key_path)):
        if not Path(p).is_file():
            raise ConfigError([f"{key}: {p}: file not found (make a local pair with "
                               "`legionctl certs init --dir DIR`, or set security.enable_tls "
                               "to false)"])
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([f"security.certificate_path: cannot load {cert_path} with key "
                           f"{key_path}: {exc}"]) from exc
    return ctx


def client_ssl_context(cert_path: str | Path) -> ssl.SSLContext:
    """A client context trusting exactly this (self-signed) certificate, hostname checked."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
