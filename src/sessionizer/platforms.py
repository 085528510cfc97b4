"""Connecting to each managed Kafka: one `[kafka] platform` switch -> the librdkafka settings.

| platform          | protocol  | mechanism      | credentials (`[kafka.auth]`)                            |
|-------------------|-----------|----------------|---------------------------------------------------------|
| `local`           | plaintext | -              | none (or your own `[kafka.common]` settings)            |
| `confluent-cloud` | SASL_SSL  | PLAIN          | `api_key_*`, `api_secret_*`                             |
|   (`method="oidc"`) | SASL_SSL | OAUTHBEARER   | `client_id_*`, `client_secret_*`, `token_endpoint`, ... |
| `msk-iam`         | SASL_SSL  | OAUTHBEARER    | `region` (+ `role_arn` or `profile`): signed AWS tokens |
| `msk-scram`       | SASL_SSL  | SCRAM-SHA-512  | `username_*`, `password_*`                              |
| `msk-tls`         | SSL       | client cert    | `certificate`, `key` (+ `key_password_*`)               |
| `gcp`             | SASL_SSL  | OAUTHBEARER    | Application Default Credentials (or `credentials_file`) |
| `gcp-plain`       | SASL_SSL  | PLAIN          | `credentials_file`: a service-account key               |

Secrets come from environment variables (`<name>_env`) or files (`<name>_file`), are
resolved once at start (a missing one fails naming its key), and print as `***`.
OAUTHBEARER tokens come from small provider objects (`token() -> (token, expiry in
epoch seconds)`), so tests and custom setups can bring their own (`token_provider`).
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

log = logging.getLogger("sessionizer.auth")

PLATFORMS = ("local", "confluent-cloud", "msk-iam", "msk-scram", "msk-tls", "gcp", "gcp-plain")
_EPOCH = datetime(1970, 1, 1)


class PlatformError(ValueError):
    """A config problem with a platform's settings; the message starts with the key."""


class Secret:
    """A credential: its value never appears in repr, str, logs or errors."""

    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        self._value = value
        self.origin = origin  # e.g. "environment variable MSK_PASSWORD": safe to show

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


def read_secret(auth: Any, name: str, platform: str, required: bool = True,
                table: str = "kafka.auth") -> Secret | None:
    """`[<table>] <name>_env` or `<name>_file`, resolved now."""
    env, path = getattr(auth, f"{name}_env"), getattr(auth, f"{name}_file")
    key = f"{table}.{name}"
    if env and path:
        raise PlatformError(f"{key}_env and {key}_file: give one of them, not both")
    if env:
        value = os.environ.get(env)
        if value is None or value == "":
            raise PlatformError(f"{key}_env: environment variable {env} is not set (needed for platform {platform})")
        return Secret(value, f"environment variable {env}")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as error:
            raise PlatformError(f"{key}_file: cannot read {path} ({error.strerror})") from None
        if not value:
            raise PlatformError(f"{key}_file: {path} is empty")
        return Secret(value, f"file {path}")
    if required:
        raise PlatformError(f"{key}_env: platform {platform} needs {name.replace('_', ' ')} "
                            f"(set {key}_env or {key}_file)")
    return None


class TokenProvider(Protocol):
    """Where OAUTHBEARER tokens come from: `token()` returns (token, expiry in epoch seconds)."""

    def token(self) -> tuple[str, float]: ...


@dataclass
class PlatformSettings:
    platform: str
    properties: dict[str, Any] = field(repr=False)  # librdkafka settings, secrets included: never log these
    token_provider: TokenProvider | None = None
    checks: list[str] = field(default_factory=list)  # the settings to look at when access is refused

    def client_properties(self) -> dict[str, Any]:
        """For one client: the properties plus its `oauth_cb`, if any."""
        props = dict(self.properties)
        if self.token_provider is not None:
            props["oauth_cb"] = oauth_callback(self.token_provider, self.platform)
        return props

    def explain_refusal(self, error: str) -> str:
        where = ", ".join(self.checks) or "the [kafka.auth] settings"
        return f"kafka.platform {self.platform!r}: Kafka refused access ({error}); check {where}"


def platform_settings(platform: str, auth: Any) -> PlatformSettings:
    if platform not in PLATFORMS:
        raise PlatformError(f"kafka.platform: {platform!r} is not one of {', '.join(PLATFORMS)}")
    builder = _BUILDERS[platform]
    settings = builder(platform, auth)
    if auth.ca:
        if not Path(auth.ca).is_file():
            raise PlatformError(f"kafka.auth.ca: no such file {auth.ca}")
        settings.properties["ssl.ca.location"] = auth.ca
        settings.checks.append(f"kafka.auth.ca ({auth.ca})")
    if auth.token_provider:
        if settings.token_provider is None:
            raise PlatformError(f"kafka.auth.token_provider: platform {platform} does not use OAUTHBEARER tokens")
        settings.token_provider = load_token_provider(auth.token_provider, auth)
    return settings


def _local(platform: str, auth: Any) -> PlatformSettings:
    return PlatformSettings(platform, {})


def _confluent_cloud(platform: str, auth: Any) -> PlatformSettings:
    if auth.method == "oidc":
        client_id = read_secret(auth, "client_id", platform)
        client_secret = read_secret(auth, "client_secret", platform)
        if not auth.token_endpoint:
            raise PlatformError("kafka.auth.token_endpoint: platform confluent-cloud with method \"oidc\" needs the "
                                "identity provider's token URL")
        if not auth.logical_cluster:
            raise PlatformError("kafka.auth.logical_cluster: platform confluent-cloud with method \"oidc\" needs the "
                                "cluster id (lkc-...)")
        extensions = f"logicalCluster={auth.logical_cluster}"
        if auth.identity_pool_id:
            extensions += f",identityPoolId={auth.identity_pool_id}"
        props = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
                 "sasl.oauthbearer.client.id": client_id.reveal(),
                 "sasl.oauthbearer.client.secret": client_secret.reveal(),
                 "sasl.oauthbearer.token.endpoint.url": auth.token_endpoint,
                 "sasl.oauthbearer.extensions": extensions}
        if auth.scope:
            props["sasl.oauthbearer.scope"] = auth.scope
        return PlatformSettings(platform, props, checks=[
            f"kafka.auth.client_id ({client_id.origin})", f"kafka.auth.client_secret ({client_secret.origin})",
            "kafka.auth.token_endpoint", "kafka.auth.logical_cluster", "kafka.auth.identity_pool_id"])
    if auth.method != "api-key":
        raise PlatformError(f"kafka.auth.method: {auth.method!r} is neither \"api-key\" nor \"oidc\"")
    return _user_and_password(platform, auth, "PLAIN", "api_key", "api_secret")


def _msk_iam(platform: str, auth: Any) -> PlatformSettings:
    if not auth.region:
        raise PlatformError("kafka.auth.region: platform msk-iam needs the cluster's AWS region (e.g. eu-west-1)")
    if auth.role_arn and auth.profile:
        raise PlatformError("kafka.auth.role_arn and kafka.auth.profile: give one of them, not both")
    provider = MskIamTokens(auth.region, role_arn=auth.role_arn, profile=auth.profile)
    return PlatformSettings(platform, {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
                            token_provider=provider,
                            checks=["kafka.auth.region", "the AWS credentials (environment, profile or role) "
                                    "and their kafka-cluster:* IAM permissions"])


def _msk_scram(platform: str, auth: Any) -> PlatformSettings:
    return _user_and_password(platform, auth, "SCRAM-SHA-512", "username", "password")


def _user_and_password(platform: str, auth: Any, mechanism: str, user_key: str, password_key: str) -> PlatformSettings:
    """SASL over TLS with a user name and a password read from `[kafka.auth]` (names as given)."""
    user = read_secret(auth, user_key, platform)
    password = read_secret(auth, password_key, platform)
    return PlatformSettings(platform, {
        "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
        "sasl.username": user.reveal(), "sasl.password": password.reveal(),
    }, checks=[f"kafka.auth.{user_key} ({user.origin})", f"kafka.auth.{password_key} ({password.origin})"])


def _msk_tls(platform: str, auth: Any) -> PlatformSettings:
    for name in ("certificate", "key"):
        value = getattr(auth, name)
        if not value:
            raise PlatformError(f"kafka.auth.{name}: platform msk-tls needs the client {name} (a PEM file)")
        if not Path(value).is_file():
            raise PlatformError(f"kafka.auth.{name}: no such file {value}")
    props = {"security.protocol": "SSL", "ssl.certificate.location": auth.certificate, "ssl.key.location": auth.key}
    checks = [f"kafka.auth.certificate ({auth.certificate})", f"kafka.auth.key ({auth.key})"]
    password = read_secret(auth, "key_password", platform, required=False)
    if password is not None:
        props["ssl.key.password"] = password.reveal()
        checks.append(f"kafka.auth.key_password ({password.origin})")
    return PlatformSettings(platform, props, checks=checks)


def _gcp(platform: str, auth: Any) -> PlatformSettings:
    provider = GcpTokens(auth.credentials_file)
    where = f"kafka.auth.credentials_file ({auth.credentials_file})" if auth.credentials_file else \
        "the Application Default Credentials"
    return PlatformSettings(platform, {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
                            token_provider=provider,
                            checks=[where, "the principal's roles/managedkafka.client role"])


def _gcp_plain(platform: str, auth: Any) -> PlatformSettings:
    if not auth.credentials_file:
        raise PlatformError("kafka.auth.credentials_file: platform gcp-plain needs the service account's key file")
    try:
        raw = Path(auth.credentials_file).read_bytes()
        email = auth.service_account or json.loads(raw)["client_email"]
    except OSError as error:
        raise PlatformError(f"kafka.auth.credentials_file: cannot read {auth.credentials_file} "
                            f"({error.strerror})") from None
    except (ValueError, KeyError, TypeError):
        raise PlatformError(f"kafka.auth.credentials_file: {auth.credentials_file} is not a service-account key "
                            "(JSON with client_email); or set kafka.auth.service_account") from None
    return PlatformSettings(platform, {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": email, "sasl.password": base64.b64encode(raw).decode("ascii"),
    }, checks=[f"kafka.auth.credentials_file ({auth.credentials_file})", "the service account's Kafka role"])


_BUILDERS: dict[str, Callable[[str, Any], PlatformSettings]] = {
    "local": _local, "confluent-cloud": _confluent_cloud, "msk-iam": _msk_iam, "msk-scram": _msk_scram,
    "msk-tls": _msk_tls, "gcp": _gcp, "gcp-plain": _gcp_plain,
}

# -- OAUTHBEARER tokens -------------------------------------------------------------------------


class TokenError(RuntimeError):
    pass


def oauth_callback(provider: TokenProvider, platform: str) -> Callable[[Any], tuple[str, float]]:
    """librdkafka's `oauth_cb`: (token, expiry in epoch **seconds**). It calls this again at 80 %
    of the lifetime; a token that has already expired is refused here, with a clear message."""

    def callback(_config: Any) -> tuple[str, float]:
        token, expiry = provider.token()
        now = time.time()
        if expiry > now * 100:  # a millisecond expiry would never be refreshed
            raise TokenError(f"platform {platform}: the token provider gave its expiry in milliseconds; "
                             "seconds are needed")
        if expiry <= now:
            message = (f"kafka.platform {platform!r}: the token provider returned a token that expired "
                       f"{now - expiry:.0f} s ago; check its credentials")
            log.error(message)
            raise TokenError(message)
        log.info("oauth token obtained", extra={"platform": platform, "expires_in_s": round(expiry - now)})
        return token, expiry

    return callback


class MskIamTokens:
    """Amazon MSK IAM: a SigV4-signed token from aws-msk-iam-sasl-signer-python.

    The signer returns the expiry in milliseconds; librdkafka wants seconds."""

    def __init__(self, region: str, role_arn: str | None = None, profile: str | None = None,
                 signer: Any = None) -> None:
        self.region, self.role_arn, self.profile = region, role_arn, profile
        self._signer = signer

    def token(self) -> tuple[str, float]:
        signer = self._signer
        if signer is None:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

            signer = self._signer = MSKAuthTokenProvider
        if self.role_arn:
            token, expiry_ms = signer.generate_auth_token_from_role_arn(self.region, self.role_arn)
        elif self.profile:
            token, expiry_ms = signer.generate_auth_token_from_profile(self.region, self.profile)
        else:
            token, expiry_ms = signer.generate_auth_token(self.region)
        return token, expiry_ms / 1000


class GcpTokens:
    """Google Cloud Managed Kafka: an access token from google-auth, wrapped the way Google's
    own Kafka login handler does (base64url without padding, joined by dots):
    {"typ":"JWT","alg":"GOOG_OAUTH2_TOKEN"} . {"exp","iat","iss","scope","sub"} . <access token>."""

    SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

    def __init__(self, credentials_file: str | None = None, credentials: Any = None,
                 request: Callable[[], Any] | None = None) -> None:
        self.credentials_file = credentials_file
        self._credentials = credentials
        self._request = request

    def _load(self) -> Any:
        if self._credentials is None:
            import google.auth

            if self.credentials_file:
                from google.oauth2 import service_account

                self._credentials = service_account.Credentials.from_service_account_file(
                    self.credentials_file, scopes=self.SCOPES)
            else:
                self._credentials, _ = google.auth.default(scopes=self.SCOPES)
        return self._credentials

    def token(self) -> tuple[str, float]:
        credentials = self._load()
        if not credentials.valid:
            if self._request is None:
                import google.auth.transport.requests

                self._request = google.auth.transport.requests.Request
            credentials.refresh(self._request())
        expiry = credentials.expiry.replace(tzinfo=None)  # google-auth keeps naive UTC
        exp = (expiry - _EPOCH).total_seconds()
        claims = {"exp": exp, "iat": time.time(), "iss": "Google", "scope": "kafka",
                  "sub": getattr(credentials, "service_account_email", None) or "unknown"}
        return ".".join([_b64url(json.dumps({"typ": "JWT", "alg": "GOOG_OAUTH2_TOKEN"})),
                         _b64url(json.dumps(claims)), _b64url(credentials.token)]), exp


def load_token_provider(spec: str, auth: Any) -> TokenProvider:
    """`module:factory` -> factory(auth) -> a TokenProvider."""
    module_name, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise PlatformError(f"kafka.auth.token_provider: cannot load {spec!r} ({error})") from None
    return factory(auth)


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")

