"""Certificates for TLS tests, made on the spot with ``cryptography``: a private CA, a
server certificate it signs for 127.0.0.1, and a self-signed one nobody trusts."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass(frozen=True)
class ServerCert:
    cert: Path  # PEM certificate
    key: Path  # PEM private key

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> ServerCert:
    path.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = path / "cert.pem", path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ServerCert(cert_path, key_path)


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca_and_certs(directory: Path) -> tuple[Path, ServerCert, ServerCert]:
    """``(ca.pem, a server certificate the CA signed for 127.0.0.1, a self-signed one for
    127.0.0.1)`` under ``directory``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Motus test CA", ca_key, "Motus test CA", ca_key, ca=True)
    ca_path = directory / "ca.pem"
    directory.mkdir(parents=True, exist_ok=True)
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    signed = _write(directory / "signed", _certificate("127.0.0.1", key, "Motus test CA", ca_key,
                                                       ca=False), key)
    own_key = ec.generate_private_key(ec.SECP256R1())
    self_signed = _write(directory / "self", _certificate("127.0.0.1", own_key, "127.0.0.1",
                                                          own_key, ca=False), own_key)
    return ca_path, signed, self_signed
