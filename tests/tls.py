"""A throw-away local certificate authority for TLS tests.

`make_tls_files(directory)` writes a CA, a server certificate valid for 127.0.0.1 and localhost, and a
client certificate signed by the same CA. It uses the `openssl` command line tool when it is on PATH
(Debian package `openssl`, installed by scripts/dev.sh) and the `cryptography` package otherwise, so the
tests need no network and no pre-made key material in the repository.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["TlsFiles", "available_backends", "make_tls_files"]

Backend = Literal["auto", "openssl", "cryptography"]

SERVER_SAN_DNS = "localhost"
SERVER_SAN_IP = "127.0.0.1"
_DAYS = 3650


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of the PEM files written by `make_tls_files`."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _has_cryptography() -> bool:
    """Tell whether the `cryptography` package can be imported."""
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """Return the certificate backends usable on this machine, preferred first."""
    backends = []
    if shutil.which("openssl"):
        backends.append("openssl")
    if _has_cryptography():
        backends.append("cryptography")
    return backends


def make_tls_files(directory: str | Path, backend: Backend = "auto") -> TlsFiles:
    """Create a CA, a server certificate (SAN IP:127.0.0.1, DNS:localhost) and a client certificate."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        directory=root,
        ca_cert=root / "ca.crt",
        ca_key=root / "ca.key",
        server_cert=root / "server.crt",
        server_key=root / "server.key",
        client_cert=root / "client.crt",
        client_key=root / "client.key",
    )
    if backend == "auto":
        found = available_backends()
        if not found:
            raise RuntimeError(
                "cannot make test certificates: neither the openssl tool nor the cryptography package is "
                "installed; fix with: apt-get install -y openssl"
            )
        backend = "openssl" if found[0] == "openssl" else "cryptography"
    if backend == "openssl":
        _make_with_openssl(files)
    else:
        _make_with_cryptography(files)
    for key in (files.ca_key, files.server_key, files.client_key):
        key.chmod(0o600)
    return files


# -- openssl command line ---------------------------------------------------------------------------------

# A self-contained config so the result does not depend on the distribution's openssl.cnf.
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:{ip}, DNS:{dns}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args: str | Path, cwd: Path) -> None:
    """Run one openssl command and raise with its stderr when it fails."""
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl tool is not installed; fix with: apt-get install -y openssl")
    proc = subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {proc.stderr.strip()}")


def _make_with_openssl(files: TlsFiles) -> None:
    """Write the CA and leaf certificates with the openssl tool (EC P-256 keys: fast to generate)."""
    root = files.directory
    cnf = root / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF.format(ip=SERVER_SAN_IP, dns=SERVER_SAN_DNS), encoding="utf-8")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-config", cnf, "-x509", *ec, "-keyout", files.ca_key, "-out", files.ca_cert,
        "-days", str(_DAYS), "-subj", "/CN=citygw test CA", "-extensions", "ca_ext", cwd=root,
    )  # fmt: skip
    for name, cn, ext, cert, key in (
        ("server", SERVER_SAN_DNS, "server_ext", files.server_cert, files.server_key),
        ("client", "citygw-test-client", "client_ext", files.client_cert, files.client_key),
    ):
        csr = root / f"{name}.csr"
        _openssl("req", "-config", cnf, "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={cn}", cwd=root)
        _openssl(
            "x509", "-req", "-in", csr, "-CA", files.ca_cert, "-CAkey", files.ca_key,
            "-CAcreateserial", "-out", cert, "-days", str(_DAYS), "-sha256",
            "-extfile", cnf, "-extensions", ext, cwd=root,
        )  # fmt: skip
        csr.unlink()


# -- cryptography package -----------------------------------------------------------------------------------


def _make_with_cryptography(files: TlsFiles) -> None:
    """Write the CA and leaf certificates with the cryptography package."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock differences
    until = now + dt.timedelta(days=_DAYS)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, key_path: Path, cert_path: Path) -> None:
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("citygw test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    save(ca_key, ca_cert, files.ca_key, files.ca_cert)

    leaves: list[tuple[str, x509.ObjectIdentifier, Path, Path]] = [
        (SERVER_SAN_DNS, ExtendedKeyUsageOID.SERVER_AUTH, files.server_key, files.server_cert),
        ("citygw-test-client", ExtendedKeyUsageOID.CLIENT_AUTH, files.client_key, files.client_cert),
    ]
    for cn, usage, key_path, cert_path in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(SERVER_SAN_IP)), x509.DNSName(SERVER_SAN_DNS)]
                ),
                critical=False,
            )
        save(key, builder.sign(ca_key, hashes.SHA256()), key_path, cert_path)
