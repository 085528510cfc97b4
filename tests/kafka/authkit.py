"""A broker with the managed platforms' listeners: a throwaway CA made here, SASL_SSL PLAIN,
SASL_SSL SCRAM-SHA-512, SSL with client certificates required, and SASL_SSL OAUTHBEARER
(Kafka's built-in unsecured validator)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker import Broker, free_port
from tokens import unsecured_jwt  # noqa: F401 - re-exported for the tests

PLAIN_USERS = {"ccloud-key": "ccloud-secret"}
SCRAM_USERS = {"msk-user": "msk-password"}
GCP_EMAIL = "sessionizer@test-project.iam.gserviceaccount.com"
GCP_KEY = {"type": "service_account", "client_email": GCP_EMAIL, "private_key_id": "0123", "project_id": "test-project"}


@dataclass
class Pki:
    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # signed by a CA the broker does not trust
    other_key: Path


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key, issuer: str, issuer_key, ca: bool = False, san: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=7))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:  # PKCS#8, which Kafka's PEM keystore needs
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, other_ca_key = _key(), _key()
    ca = _cert("sessionizer-test-ca", ca_key, "sessionizer-test-ca", ca_key, ca=True)
    broker_key = _key()
    broker = _cert("localhost", broker_key, "sessionizer-test-ca", ca_key, san=True)
    client_key, other_key = _key(), _key()
    client = _cert("sessionizer-client", client_key, "sessionizer-test-ca", ca_key)
    other = _cert("sessionizer-client", other_key, "some-other-ca", other_ca_key)
    pem = serialization.Encoding.PEM
    files = {
        "ca.pem": ca.public_bytes(pem),
        "broker-keystore.pem": _pem_key(broker_key) + broker.public_bytes(pem) + ca.public_bytes(pem),
        "client.pem": client.public_bytes(pem), "client.key": _pem_key(client_key),
        "other.pem": other.public_bytes(pem), "other.key": _pem_key(other_key),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return Pki(directory / "ca.pem", directory / "broker-keystore.pem", directory / "client.pem",
               directory / "client.key", directory / "other.pem", directory / "other.key")


class AuthBroker:
    """The broker plus where each platform's listener is."""

    def __init__(self, work: Path) -> None:
        self.pki = make_pki(work / "pki")
        self.gcp_key_file = work / "gcp-key.json"
        self.gcp_key_file.write_text(json.dumps(GCP_KEY))
        gcp_password = base64.b64encode(self.gcp_key_file.read_bytes()).decode()
        self.ports = {name: free_port() for name in ("SASL_PLAIN", "SASL_SCRAM", "MTLS", "SASL_OAUTH")}
        plain_users = " ".join(f'"user_{u}"="{p}"' for u, p in {**PLAIN_USERS, GCP_EMAIL: gcp_password}.items())
        extra = "\n".join([
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.pki.broker_keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.pki.ca}",
            "listener.name.mtls.ssl.client.auth=required",
            "listener.name.sasl_plain.sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plain.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
            f'required username="admin" password="admin-secret" user_admin="admin-secret" {plain_users};',
            "listener.name.sasl_scram.sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_scram.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_oauth.sasl.enabled.mechanisms=OAUTHBEARER",
            "listener.name.sasl_oauth.oauthbearer.sasl.jaas.config="
            'org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="admin";',
            "listener.name.sasl_oauth.oauthbearer.connections.max.reauth.ms=10000",
        ])
        listeners = {"SASL_PLAIN": ("SASL_SSL", self.ports["SASL_PLAIN"]),
                     "SASL_SCRAM": ("SASL_SSL", self.ports["SASL_SCRAM"]),
                     "MTLS": ("SSL", self.ports["MTLS"]),
                     "SASL_OAUTH": ("SASL_SSL", self.ports["SASL_OAUTH"])}
        self.broker = Broker(work / "broker", extra_properties=extra, listeners=listeners)

    def start(self) -> "AuthBroker":
        self.broker.start()
        self._create_scram_users()
        return self

    def close(self) -> None:
        self.broker.close()

    @property
    def plaintext(self) -> str:
        return self.broker.bootstrap

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def _create_scram_users(self) -> None:
        from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                           UserScramCredentialUpsertion)

        admin = AdminClient({"bootstrap.servers": self.plaintext})
        upserts = [UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                                password.encode()) for user, password in SCRAM_USERS.items()]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result()
        time.sleep(1)  # credentials reach the listener through the metadata log
