"""Each `[kafka] platform` profile, end to end through the local broker's matching listener:
`sessionizer run` consumes and produces with it; wrong credentials fail fast and clearly,
with no secret in any output."""

import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import orjson

from authkit import GCP_EMAIL, PLAIN_USERS, SCRAM_USERS, unsecured_jwt
from kit import SESSIONIZER, Job, Run, read_committed

HERE = Path(__file__).parent

SECRETS = ["ccloud-secret", "msk-password", "wrong-password-123", "oidc-client-secret"]
# The most a user can ask to see: the job's own debug lines and every librdkafka debug context.
DEBUG = dict(runtime='idle_timeout = "off"\ncommit_interval = "100ms"\nlog_level = "debug"', common='debug = "all"')


def spins(n: int = 50) -> list[bytes]:
    return [b'{"event":"spin","user_id":"u%d","timestamp":%d,"value":{"stake":1}}' % (i % 5, 1000 + i * 1000)
            for i in range(n)] + [b'{"event":"spin","user_id":"u0","timestamp":99999999}']


def profile_config(auth_broker, job, listener, auth, runtime='idle_timeout = "off"\ncommit_interval = "100ms"',
                   common: str = ""):
    platform, body = auth
    config = job.config("c", runtime=runtime)
    text = config.read_text().replace(f'bootstrap_servers = "{auth_broker.plaintext}"',
                                      f'bootstrap_servers = "{auth_broker.address(listener)}"\nplatform = "{platform}"')
    config.write_text(text + f'\n[kafka.auth]\n{body}\nca = "{auth_broker.pki.ca}"\n'
                      + (f"\n[kafka.common]\n{common}\n" if common else ""))
    return config


def run_profile(auth_broker, tmp_path, name, listener, auth, env=None, expect_ok=True, seconds=60, debug=False):
    """Produce spins, run `sessionizer run` with the profile until the input is consumed."""
    job = Job(auth_broker.plaintext, name, 1, tmp_path)
    job.produce(spins(), chosen=[0] * 51)
    config = profile_config(auth_broker, job, listener, auth, **DEBUG if debug else {})
    environment = {**os.environ, "PYTHONPATH": str(HERE), **(env or {})}
    if not expect_ok:
        started = time.monotonic()
        done = subprocess.run([str(SESSIONIZER), "run", "--config", str(config)], capture_output=True,
                              env=environment, timeout=120)
        return done, time.monotonic() - started
    run = Run(config, tmp_path / f"{name}.log", env=environment)
    try:
        job.wait_until_consumed(seconds, [run])
    finally:
        code = run.stop()
    out, err = b"", run.log_text().encode()
    assert code == 0, err.decode()[-3000:]
    sessions = [orjson.loads(v) for _, v in read_committed(auth_broker.plaintext, job.outputs["xp-session-events"])]
    assert len(sessions) == 5  # u0..u4: their first sessions, closed by u0's last spin
    for secret in SECRETS:
        assert secret.encode() not in out + err
    return err.decode()


def kafka_auth(platform: str, body: str, _ca: Path = None) -> tuple[str, str]:
    return platform, body


# -- each profile through its listener ------------------------------------------------------------

def test_confluent_cloud_api_key(auth_broker, tmp_path):
    key, secret = next(iter(PLAIN_USERS.items()))
    run_profile(auth_broker, tmp_path, "ccloud", "SASL_PLAIN",
                kafka_auth("confluent-cloud", 'api_key_env = "CC_KEY"\napi_secret_env = "CC_SECRET"', auth_broker.pki.ca),
                env={"CC_KEY": key, "CC_SECRET": secret})


class TokenEndpoint:
    """An OIDC token endpoint on loopback (client-credentials grant): hands out unsecured JWTs."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.tokens: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                outer.requests.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
                token, _ = unsecured_jwt(lifetime_s=300)
                outer.tokens.append(token)
                body = orjson.dumps({"access_token": token, "token_type": "Bearer", "expires_in": 300})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def auth(self, tmp_path: Path) -> tuple[str, str]:
        (tmp_path / "client-secret").write_text("oidc-client-secret\n")
        return kafka_auth("confluent-cloud", "\n".join([
            'method = "oidc"', 'client_id_env = "OIDC_CLIENT_ID"', f'client_secret_file = "{tmp_path / "client-secret"}"',
            f'token_endpoint = "http://127.0.0.1:{self.server.server_port}/token"', 'scope = "kafka"',
            'logical_cluster = "lkc-test"', 'identity_pool_id = "pool-test"']))


def test_confluent_cloud_oidc(auth_broker, tmp_path):
    endpoint = TokenEndpoint()
    try:
        run_profile(auth_broker, tmp_path, "oidc", "SASL_OAUTH", endpoint.auth(tmp_path),
                    env={"OIDC_CLIENT_ID": "sessionizer-client"})
    finally:
        endpoint.server.shutdown()
    assert endpoint.requests and "grant_type=client_credentials" in endpoint.requests[0]


def test_msk_iam_with_an_injected_token_provider(auth_broker, tmp_path):
    log = run_profile(auth_broker, tmp_path, "mskiam", "SASL_OAUTH", kafka_auth(
        "msk-iam", 'region = "eu-west-1"\ntoken_provider = "tokens:long_lived"', auth_broker.pki.ca))
    assert "oauth token obtained" in log and "platform=msk-iam" in log


def test_msk_scram(auth_broker, tmp_path):
    user, password = next(iter(SCRAM_USERS.items()))
    (tmp_path / "user").write_text(user)
    run_profile(auth_broker, tmp_path, "mskscram", "SASL_SCRAM", kafka_auth(
        "msk-scram", f'username_file = "{tmp_path / "user"}"\npassword_env = "MSK_PASSWORD"', auth_broker.pki.ca),
        env={"MSK_PASSWORD": password})


def test_msk_tls(auth_broker, tmp_path):
    pki = auth_broker.pki
    run_profile(auth_broker, tmp_path, "msktls", "MTLS", kafka_auth(
        "msk-tls", f'certificate = "{pki.client_cert}"\nkey = "{pki.client_key}"', pki.ca))


def test_gcp_with_an_injected_token_provider(auth_broker, tmp_path):
    run_profile(auth_broker, tmp_path, "gcp", "SASL_OAUTH", kafka_auth(
        "gcp", 'token_provider = "tokens:long_lived"', auth_broker.pki.ca))


def test_gcp_plain_with_a_service_account_key(auth_broker, tmp_path):
    run_profile(auth_broker, tmp_path, "gcpplain", "SASL_PLAIN", kafka_auth(
        "gcp-plain", f'credentials_file = "{auth_broker.gcp_key_file}"', auth_broker.pki.ca))
    assert GCP_EMAIL


# -- wrong credentials fail fast, naming the platform and the setting -------------------------------

def test_wrong_password_fails_fast_and_names_the_setting(auth_broker, tmp_path):
    user = next(iter(SCRAM_USERS))
    done, took = run_profile(auth_broker, tmp_path, "badpw", "SASL_SCRAM", kafka_auth(
        "msk-scram", f'username_env = "MSK_USER"\npassword_env = "MSK_PASSWORD"', auth_broker.pki.ca),
        env={"MSK_USER": user, "MSK_PASSWORD": "wrong-password-123"}, expect_ok=False)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr[-2000:]
    assert took < 30
    assert "kafka.platform 'msk-scram': Kafka refused access" in stderr
    assert "kafka.auth.password (environment variable MSK_PASSWORD)" in stderr
    assert "wrong-password-123" not in stderr + done.stdout.decode()


def test_expired_token_fails_fast(auth_broker, tmp_path):
    done, took = run_profile(auth_broker, tmp_path, "expired", "SASL_OAUTH", kafka_auth(
        "msk-iam", 'region = "eu-west-1"\ntoken_provider = "tokens:expired"', auth_broker.pki.ca),
        expect_ok=False)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr[-2000:]
    assert took < 40
    assert "kafka.platform 'msk-iam'" in stderr and "expired" in stderr


def test_wrong_certificate_fails_fast(auth_broker, tmp_path):
    pki = auth_broker.pki
    done, took = run_profile(auth_broker, tmp_path, "badcert", "MTLS", kafka_auth(
        "msk-tls", f'certificate = "{pki.other_cert}"\nkey = "{pki.other_key}"', pki.ca), expect_ok=False)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr[-2000:]
    assert took < 30
    assert "kafka.platform 'msk-tls': Kafka refused access" in stderr
    assert f"kafka.auth.certificate ({pki.other_cert})" in stderr


def test_oauthbearer_tokens_are_fetched_again_before_they_expire(auth_broker, tmp_path):
    calls = tmp_path / "token-calls"
    job = Job(auth_broker.plaintext, "refresh", 1, tmp_path)
    config = profile_config(auth_broker, job, "SASL_OAUTH", ("gcp", 'token_provider = "tokens:short_lived"'),
                            runtime='idle_timeout = "off"')
    env = {**os.environ, "PYTHONPATH": str(HERE), "SESSIONIZER_TEST_TOKEN_LOG": str(calls)}
    log = tmp_path / "refresh.log"
    process = subprocess.Popen([str(SESSIONIZER), "run", "--config", str(config)], stderr=open(log, "wb"), env=env)
    started = time.time()
    time.sleep(25)  # tokens live 10 s: librdkafka asks again at 80 %
    job.produce(spins(), chosen=[0] * 51)
    try:
        job.wait_until_consumed(30, [])  # still authenticated after several refreshes
    finally:
        process.terminate()
        process.wait(60)
    assert process.returncode == 0, log.read_text()[-2000:]
    times = [float(line) - started for line in calls.read_text().split()]
    late = [t for t in times if t > 9]
    assert len(late) >= 2, times  # each client asked again before its first token expired


def test_unsecured_tokens_use_the_standard_alphabet_and_expire_in_seconds():
    token, expiry = unsecured_jwt(lifetime_s=60)
    header, body, signature = token.split(".")
    assert signature == "" and not set(header + body) & set("-_+/")
    assert time.time() + 50 < expiry < time.time() + 70


def test_secrets_are_not_in_the_settings_repr(tmp_path, monkeypatch):
    from sessionizer.config import load_run_settings

    monkeypatch.setenv("CC_KEY", "ccloud-key")
    monkeypatch.setenv("CC_SECRET", "ccloud-secret")
    config = tmp_path / "c.toml"
    config.write_text('[sessions]\n[kafka]\nplatform = "confluent-cloud"\n'
                      '[kafka.auth]\napi_key_env = "CC_KEY"\napi_secret_env = "CC_SECRET"\n')
    settings = load_run_settings(config)
    assert settings.platform.properties["sasl.password"] == "ccloud-secret"
    assert "ccloud-secret" not in repr(settings)


# -- secrets at the most verbose log level ---------------------------------------------------------

def test_scram_secrets_stay_out_of_debug_logs(auth_broker, tmp_path):
    user, password = next(iter(SCRAM_USERS.items()))
    log = run_profile(auth_broker, tmp_path, "dbgscram", "SASL_SCRAM", kafka_auth(
        "msk-scram", 'username_env = "MSK_USER"\npassword_env = "MSK_PASSWORD"'), env={"MSK_USER": user, "MSK_PASSWORD": password},
        debug=True)
    assert "logger=sessionizer.librdkafka" in log and "level=debug" in log and "SASL" in log  # it was verbose
    assert "sasl.password = [redacted]" in log  # librdkafka's own config dump: it names the setting, not its value
    assert password not in log


def test_oauthbearer_tokens_and_client_secret_stay_out_of_debug_logs(auth_broker, tmp_path):
    endpoint = TokenEndpoint()
    try:
        log = run_profile(auth_broker, tmp_path, "dbgoidc", "SASL_OAUTH", endpoint.auth(tmp_path),
                          env={"OIDC_CLIENT_ID": "sessionizer-client"}, debug=True)
    finally:
        endpoint.server.shutdown()
    assert "logger=sessionizer.librdkafka" in log and "OAUTHBEARER" in log
    assert "sasl.oauthbearer.client.secret = [redacted]" in log
    assert endpoint.tokens
    for token in endpoint.tokens:
        header, claims, _ = token.split(".")
        assert claims not in log and token not in log
