"""Platform profiles and token builders, offline (no cloud, no broker)."""

import base64
import datetime
import json
import time
from urllib.parse import parse_qs, urlparse

import pytest

from sessionizer.config import AuthTable
from sessionizer.platforms import (GcpTokens, MskIamTokens, PlatformError, Secret, TokenError, oauth_callback,
                                   platform_settings)


def auth(**fields) -> AuthTable:
    return AuthTable(**fields)


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# -- profiles ---------------------------------------------------------------------------------

def test_each_profile_sets_its_protocol_and_mechanism(monkeypatch, tmp_path):
    monkeypatch.setenv("K", "key")
    monkeypatch.setenv("S", "secret")
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({"client_email": "sa@p.iam.gserviceaccount.com"}))
    cases = {
        "confluent-cloud": (auth(api_key_env="K", api_secret_env="S"), ("SASL_SSL", "PLAIN")),
        "msk-iam": (auth(region="eu-west-1"), ("SASL_SSL", "OAUTHBEARER")),
        "msk-scram": (auth(username_env="K", password_env="S"), ("SASL_SSL", "SCRAM-SHA-512")),
        "msk-tls": (auth(certificate=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem")), ("SSL", None)),
        "gcp": (auth(), ("SASL_SSL", "OAUTHBEARER")),
        "gcp-plain": (auth(credentials_file=str(key_file)), ("SASL_SSL", "PLAIN")),
    }
    for platform, (table, (protocol, mechanism)) in cases.items():
        settings = platform_settings(platform, table)
        assert settings.properties["security.protocol"] == protocol, platform
        assert settings.properties.get("sasl.mechanism") == mechanism, platform
        assert (settings.token_provider is not None) == (mechanism == "OAUTHBEARER"), platform
    plain = platform_settings("gcp-plain", cases["gcp-plain"][0]).properties
    assert plain["sasl.username"] == "sa@p.iam.gserviceaccount.com"
    assert base64.b64decode(plain["sasl.password"]) == key_file.read_bytes()
    assert platform_settings("local", auth()).properties == {}


def test_confluent_cloud_oidc_sets_librdkafkas_oidc_method(monkeypatch):
    monkeypatch.setenv("ID", "client")
    monkeypatch.setenv("SECRET", "s3cret")
    props = platform_settings("confluent-cloud", auth(
        method="oidc", client_id_env="ID", client_secret_env="SECRET", token_endpoint="https://idp/token",
        logical_cluster="lkc-1", identity_pool_id="pool-2", scope="kafka")).properties
    assert props["sasl.oauthbearer.method"] == "oidc"
    assert props["sasl.oauthbearer.extensions"] == "logicalCluster=lkc-1,identityPoolId=pool-2"
    assert props["sasl.oauthbearer.token.endpoint.url"] == "https://idp/token"


@pytest.mark.parametrize("platform, table, message", [
    ("heroku", auth(), "kafka.platform: 'heroku' is not one of"),
    ("confluent-cloud", auth(), "kafka.auth.api_key_env: platform confluent-cloud needs api key"),
    ("confluent-cloud", auth(api_key_env="NOPE_NOT_SET", api_secret_env="X"),
     "kafka.auth.api_key_env: environment variable NOPE_NOT_SET is not set"),
    ("confluent-cloud", auth(api_key_env="A", api_key_file="/x", api_secret_env="B"),
     "kafka.auth.api_key_env and kafka.auth.api_key_file: give one"),
    ("confluent-cloud", auth(method="saml"), "kafka.auth.method: 'saml' is neither"),
    ("msk-iam", auth(), "kafka.auth.region: platform msk-iam needs"),
    ("msk-scram", auth(username_file="/nonexistent/user", password_env="X"),
     "kafka.auth.username_file: cannot read /nonexistent/user"),
    ("msk-tls", auth(), "kafka.auth.certificate: platform msk-tls needs"),
    ("gcp-plain", auth(), "kafka.auth.credentials_file: platform gcp-plain needs"),
    ("local", auth(token_provider="x:y"), "kafka.auth.token_provider: platform local does not use"),
    ("msk-iam", auth(region="r", token_provider="no_such_module:f"), "kafka.auth.token_provider: cannot load"),
])
def test_bad_platform_settings_name_the_key(platform, table, message):
    with pytest.raises(PlatformError) as caught:
        platform_settings(platform, table)
    assert str(caught.value).startswith(message)


def test_secrets_print_as_stars():
    secret = Secret("hunter2", "environment variable P")
    assert repr(secret) == str(secret) == f"{secret}" == "***"
    assert secret.reveal() == "hunter2"


def test_refusal_message_names_the_platform_and_settings(monkeypatch):
    monkeypatch.setenv("U", "user")
    monkeypatch.setenv("P", "pw")
    settings = platform_settings("msk-scram", auth(username_env="U", password_env="P"))
    message = settings.explain_refusal("SASL authentication error")
    assert message.startswith("kafka.platform 'msk-scram': Kafka refused access (SASL authentication error)")
    assert "kafka.auth.password (environment variable P)" in message and "pw" not in message.replace("P)", "")


# -- the oauth_cb contract: seconds, never an expired token --------------------------------------

class Fixed:
    def __init__(self, token, expiry):
        self.value = (token, expiry)

    def token(self):
        return self.value


def test_oauth_callback_passes_seconds_through():
    expiry = time.time() + 600
    assert oauth_callback(Fixed("t", expiry), "gcp")(None) == ("t", expiry)


def test_oauth_callback_refuses_milliseconds_and_expired_tokens():
    with pytest.raises(TokenError, match="milliseconds"):
        oauth_callback(Fixed("t", (time.time() + 600) * 1000), "msk-iam")(None)
    with pytest.raises(TokenError, match="expired"):
        oauth_callback(Fixed("t", time.time() - 5), "msk-iam")(None)


# -- the real MSK IAM signer, offline (presigning is local) ---------------------------------------

def test_msk_iam_token_is_a_signed_url_and_its_expiry_is_in_seconds(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    token, expiry = oauth_callback(MskIamTokens("eu-west-1"), "msk-iam")(None)
    url = urlparse(b64url_decode(token).decode())
    query = parse_qs(url.query)
    assert url.netloc == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert time.time() + 800 < expiry < time.time() + 1000  # seconds, not milliseconds


def test_msk_iam_uses_the_role_or_profile_signer():
    calls = []

    class Signer:
        @staticmethod
        def generate_auth_token_from_role_arn(region, arn):
            calls.append(("role", region, arn))
            return "t", (time.time() + 900) * 1000

        @staticmethod
        def generate_auth_token_from_profile(region, profile):
            calls.append(("profile", region, profile))
            return "t", (time.time() + 900) * 1000

    MskIamTokens("us-east-1", role_arn="arn:aws:iam::1:role/r", signer=Signer).token()
    MskIamTokens("us-east-1", profile="prod", signer=Signer).token()
    assert calls == [("role", "us-east-1", "arn:aws:iam::1:role/r"), ("profile", "us-east-1", "prod")]


# -- the Google token wrapper, with stub credentials ---------------------------------------------

class StubCredentials:
    def __init__(self):
        self.valid = False
        self.token = None
        self.expiry = None
        self.service_account_email = "sessionizer@proj.iam.gserviceaccount.com"
        self.refreshed = 0

    def refresh(self, request):
        self.refreshed += 1
        self.valid = True
        self.token = "ya29.access-token"
        self.expiry = datetime.datetime.utcnow() + datetime.timedelta(hours=1)


def test_gcp_token_wraps_the_access_token_like_googles_login_handler():
    credentials = StubCredentials()
    token, expiry = GcpTokens(credentials=credentials, request=lambda: None).token()
    header, claims, access = token.split(".")
    assert "=" not in token
    assert json.loads(b64url_decode(header)) == {"typ": "JWT", "alg": "GOOG_OAUTH2_TOKEN"}
    body = json.loads(b64url_decode(claims))
    assert body["sub"] == "sessionizer@proj.iam.gserviceaccount.com"
    assert body["iss"] == "Google" and body["scope"] == "kafka"
    assert body["exp"] == pytest.approx(expiry) and time.time() + 3500 < expiry < time.time() + 3700
    assert b64url_decode(access) == b"ya29.access-token"
    GcpTokens(credentials=credentials, request=lambda: None).token()
    assert credentials.refreshed == 1  # still valid: not refreshed again
