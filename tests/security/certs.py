"""Throwaway certificates for the TLS tests, made with the `cryptography` package.

`make_pki(dir)` writes a CA, a server certificate for 127.0.0.1 and localhost signed by it, a
client certificate signed by it, and a client certificate signed by another CA the server does
not trust. EC P-256 keys: generating them takes milliseconds.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    stranger_cert: str     # signed by a CA the server does not know
    stranger_key: str


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, *, ca=False, server=False, client=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> str:
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)
    return str(path)


def make_pki(directory) -> Pki:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
    ca_key, other_ca_key, server_key, client_key, stranger_key = key(), key(), key(), key(), key()
    ca = _cert("test CA", ca_key, "test CA", ca_key, ca=True)
    other_ca = _cert("other CA", other_ca_key, "other CA", other_ca_key, ca=True)
    server = _cert("127.0.0.1", server_key, "test CA", ca_key, server=True)
    client = _cert("alice", client_key, "test CA", ca_key, client=True)
    stranger = _cert("mallory", stranger_key, "other CA", other_ca_key, client=True)
    return Pki(ca=_write(d / "ca.pem", ca), server_cert=_write(d / "server.pem", server),
               server_key=_write(d / "server.key", key=server_key), client_cert=_write(d / "client.pem", client),
               client_key=_write(d / "client.key", key=client_key),
               stranger_cert=_write(d / "stranger.pem", stranger),
               stranger_key=_write(d / "stranger.key", key=stranger_key))
