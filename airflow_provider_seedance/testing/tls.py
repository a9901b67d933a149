"""A throwaway certificate authority for serving the emulator over HTTPS on loopback.

Tests and benchmarks use it to exercise what enterprise networks need: a private CA that the connection
trusts through its ``ca_bundle`` extra. ``cryptography`` (an Airflow dependency) is imported on first use.

Example::

    certs = make_local_certificates(tmp_path)
    with SeedanceEmulator(ssl_certfile=certs.cert_path, ssl_keyfile=certs.key_path) as emulator:
        os.environ["AIRFLOW_CONN_SEEDANCE_DEFAULT"] = emulator.connection_json(ca_bundle=str(certs.ca_path))
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The names the server certificate is valid for: loopback only."""

VALIDITY = datetime.timedelta(days=2)
"""How long the certificates are valid: long enough for any run, useless if they ever leak."""


@dataclass(frozen=True)
class LocalCertificates:
    """
    The files of a throwaway CA and of one server certificate it signed.

    :param ca_path: the CA certificate (PEM): what a client trusts (``ca_bundle``).
    :param cert_path: the server certificate (PEM), for ``ssl_certfile``.
    :param key_path: the server's private key (PEM, unencrypted), for ``ssl_keyfile``.
    """

    ca_path: Path
    cert_path: Path
    key_path: Path


def make_local_certificates(directory: Path | str, hosts: Sequence[str] = DEFAULT_HOSTS) -> LocalCertificates:
    """
    Create a CA and a server certificate for ``hosts`` (ECDSA P-256) in ``directory``; return their paths.

    :param directory: an existing directory; the files ``ca.pem``, ``server.pem`` and ``server-key.pem``
        are written there.
    :param hosts: the IP addresses and DNS names the server certificate is valid for.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(directory)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seedance emulator test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs = LocalCertificates(
        ca_path=folder / "ca.pem", cert_path=folder / "server.pem", key_path=folder / "server-key.pem"
    )
    certs.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certs.key_path.chmod(0o600)
    return certs


__all__ = ["LocalCertificates", "make_local_certificates"]
