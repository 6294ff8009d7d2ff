"""sigv4: the relay's signing (botocore's SigV4Auth) against AWS's published test vectors, and end to end:
a receiver that recomputes each signature from the request as it arrived, twice (tests/sigv4check.py,
written from AWS's description and itself checked against the vectors; and botocore's own signer),
in front of a real VictoriaMetrics. Credentials from the config, the environment (with a session
token), a profile, and a role assumed through an STS of ours; none at all: reason sigv4, retried."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from relay._exceptions import ConfigError, SigV4Error
from relay.config import Secret, parse_config
from relay.config_http import SigV4Config
from relay.devtools.localenv import VictoriaMetrics
from relay.http.client import ClientPool
from relay.http.sigv4 import SigV4Signer
from relay.metrics import SelfMetrics
from relay.remote.writer import RemoteWriter
from tests import sigv4check
from tests.authkit import Receiver, _Quiet, _Server
from tests.conftest import DATA
from tests.test_remote_write import make_batches, run_writer, rw_config

pytestmark = pytest.mark.anyio

VECTORS = json.loads((DATA / "sigv4" / "vectors.json").read_text())
CASES = VECTORS["cases"]
KEY, SECRET, REGION = "AKIDRELAYTEST", "relay-test-secret-key/+very-secret", "eu-west-1"


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An AWS environment with nothing in it: no keys, empty shared files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "credentials").write_text("")
    (tmp_path / "config").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


# -- the vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_independent_verifier_reproduces_the_vectors(case: dict[str, Any]) -> None:
    signed = sorted({k.lower() for k, _ in case["headers"]})
    creq = sigv4check.canonical_request(case["method"], case["target"], case["headers"], case["body"].encode(),
                                        signed)
    assert creq == case["creq"]
    sts, sig = sigv4check.signature(VECTORS["secret_key"], VECTORS["amz_date"], VECTORS["region"],
                                    VECTORS["service"], creq)
    assert sts == case["sts"] and case["authz"].endswith(f"Signature={sig}")
    verdict = sigv4check.verify(case["method"], case["target"], [*case["headers"], ("Authorization", case["authz"])],
                                case["body"].encode(), access_key=VECTORS["access_key"], secret=VECTORS["secret_key"],
                                region=VECTORS["region"], service=VECTORS["service"])
    assert verdict == ""


def _at_vector_time() -> Any:
    when = datetime.datetime.strptime(VECTORS["amz_date"], "%Y%m%dT%H%M%SZ")
    return mock.patch("botocore.auth.get_current_datetime", return_value=when)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_relay_signer_gives_the_vectors(case: dict[str, Any]) -> None:
    signer = SigV4Signer(SigV4Config(region=VECTORS["region"], access_key=VECTORS["access_key"],
                                     secret_key=Secret(VECTORS["secret_key"]), service_name=VECTORS["service"]))
    headers = [(k, v) for k, v in case["headers"] if k.lower() not in ("host", "x-amz-date")]
    request = httpx.Request(case["method"], "https://example.amazonaws.com" + case["target"], headers=headers)
    request.headers.pop("content-length", None)  # not in the vectors' requests
    with _at_vector_time():
        signer.sign_with(request, Credentials(VECTORS["access_key"], VECTORS["secret_key"]))
    assert request.headers["X-Amz-Date"] == VECTORS["amz_date"]
    assert request.headers["Authorization"] == case["authz"]


# -- end to end ---------------------------------------------------------------------------------


def _wire_headers(h: BaseHTTPRequestHandler) -> list[tuple[str, str]]:
    return list(h.headers.items())


def botocore_signature(h: BaseHTTPRequestHandler, body: bytes, key: str, secret: str, token: str | None,
                       region: str, service: str) -> str:
    """botocore's own signature of the request as it arrived (signed headers as the request names them)."""
    got = dict((k.lower(), v) for k, v in _wire_headers(h))
    signed = got["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    aws = AWSRequest(method=h.command, url=f"http://{got['host']}{h.path}", data=body,
                     headers={k: v for k, v in _wire_headers(h) if k.lower() in signed})
    aws.context["timestamp"] = got["x-amz-date"]
    auth = SigV4Auth(Credentials(key, secret, token), service, region)
    return auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)


class SignatureCheck:
    """A Receiver check: both verifiers must accept the signature; ``problems`` says why one did not."""

    def __init__(self, key: str, secret: str, token: str | None = None, region: str = REGION,
                 service: str = "aps") -> None:
        self.key, self.secret, self.token, self.region, self.service = key, secret, token, region, service
        self.problems: list[str] = []
        self.checked = 0

    def __call__(self, h: BaseHTTPRequestHandler, body: bytes) -> bool:
        self.checked += 1
        headers = _wire_headers(h)
        problem = sigv4check.verify(h.command, h.path, headers, body, access_key=self.key, secret=self.secret,
                                    region=self.region, service=self.service)
        if not problem:
            theirs = botocore_signature(h, body, self.key, self.secret, self.token, self.region, self.service)
            if not dict((k.lower(), v) for k, v in headers)["authorization"].endswith(f"Signature={theirs}"):
                problem = "botocore computes another signature"
        if not problem and self.token is not None and h.headers.get("X-Amz-Security-Token") != self.token:
            problem = "no or another X-Amz-Security-Token"
        if problem:
            self.problems.append(problem)
        return not problem


@pytest.mark.services
async def test_remote_write_signed_into_victoria_metrics(victoria_metrics: VictoriaMetrics, aws_env: Path) -> None:
    check = SignatureCheck(KEY, SECRET)
    receiver = Receiver(check, upstream=victoria_metrics.write_url)
    pool = ClientPool()
    t0 = (int(time.time()) - 1500) * 1000
    try:
        cfg = rw_config(f"{receiver.url}/workspaces/ws-1/api/v1/remote_write",
                        f"    sigv4: {{region: {REGION}, access_key: {KEY}, secret_key: '{SECRET}'}}\n")
        assert SECRET not in repr(cfg)
        writer = RemoteWriter(cfg, pool, SelfMetrics())
        assert await run_writer(writer, make_batches(25, 4, "rw-sigv4", t0))
    finally:
        await pool.aclose()
        receiver.close()
    assert check.problems == [] and check.checked >= 1 and receiver.refused == 0
    victoria_metrics.flush()
    assert victoria_metrics.sample_count('{job="rw-sigv4"}') == 100


async def sign_once(cfg: SigV4Config, check: SignatureCheck) -> Receiver:
    receiver = Receiver(check)
    pool = ClientPool()
    try:
        sc = parse_config("scrape_configs:\n  - job_name: a\n    static_configs: [{targets: [x:1]}]\n").scrape_configs[0]
        from dataclasses import replace

        client = pool.get(replace(sc.http, sigv4=cfg))
        response = await client.get(f"{receiver.url}/metrics?x=1", timeout=10)
        assert response.status_code == 200, (response.status_code, check.problems)
    finally:
        await pool.aclose()
        receiver.close()
    return receiver


async def test_credentials_from_the_environment_with_a_session_token(aws_env: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    check = SignatureCheck("ASIAENV", "env-secret", "env-session-token", region="us-west-2")
    receiver = await sign_once(SigV4Config(), check)
    assert check.problems == [] and "x-amz-security-token" in receiver.seen[-1]["authorization"]


async def test_credentials_of_a_profile(aws_env: Path) -> None:
    (aws_env / "credentials").write_text("[writer]\naws_access_key_id = AKIDPROFILE\n"
                                         "aws_secret_access_key = profile-secret\n")
    (aws_env / "config").write_text("[profile writer]\nregion = ap-south-1\n")
    check = SignatureCheck("AKIDPROFILE", "profile-secret", region="ap-south-1", service="execute-api")
    await sign_once(SigV4Config(profile="writer", service_name="execute-api"), check)
    assert check.problems == [] and check.checked == 1
    with pytest.raises(ConfigError, match=r"sigv4\.profile: AWS profile 'nope' is not in"):
        SigV4Signer(SigV4Config(profile="nope"))


class FakeSTS(_Server):
    """AssumeRole on loopback: checks the caller's signature (service sts), answers with role credentials."""

    def __init__(self) -> None:
        self.calls: list[dict[str, list[str]]] = []
        self.problems: list[str] = []
        super().__init__(_STSHandler)


class _STSHandler(_Quiet):
    def do_POST(self) -> None:
        sts: FakeSTS = self.server.owner  # type: ignore[attr-defined]
        body = self.body()
        problem = sigv4check.verify(self.command, self.path, list(self.headers.items()), body, access_key=KEY,
                                    secret=SECRET, region=REGION, service="sts")
        if problem:
            sts.problems.append(problem)
        form = parse_qs(body.decode())
        sts.calls.append(form)
        if problem or form.get("Action") != ["AssumeRole"]:
            self.reply(403, b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                       b"<Message>denied</Message></Error><RequestId>1</RequestId></ErrorResponse>", "text/xml")
            return
        answer = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
            "<Credentials><AccessKeyId>ASIAROLE</AccessKeyId><SecretAccessKey>role-secret</SecretAccessKey>"
            "<SessionToken>role-session-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
            "</Credentials><AssumedRoleUser><AssumedRoleId>AROA1:relay</AssumedRoleId>"
            "<Arn>arn:aws:sts::123456789012:assumed-role/writer/relay</Arn></AssumedRoleUser>"
            "</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"
        )
        self.reply(200, answer.encode(), "text/xml")


@pytest.fixture
def fake_sts(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSTS]:
    sts = FakeSTS()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{sts.port}")
    yield sts
    sts.close()


async def test_role_assumed_through_sts(fake_sts: FakeSTS) -> None:
    role = "arn:aws:iam::123456789012:role/writer"
    cfg = SigV4Config(region=REGION, access_key=KEY, secret_key=Secret(SECRET), role_arn=role,
                      external_id="ext-1", session_name="relay-test")
    check = SignatureCheck("ASIAROLE", "role-secret", "role-session-token")
    await sign_once(cfg, check)
    assert fake_sts.problems == [] and check.problems == []
    (call,) = fake_sts.calls
    assert call["RoleArn"] == [role] and call["RoleSessionName"] == ["relay-test"] and call["ExternalId"] == ["ext-1"]


async def test_no_credentials_is_a_sigv4_retry(aws_env: Path, fake_sts: FakeSTS,
                                               caplog: pytest.LogCaptureFixture) -> None:
    check = SignatureCheck(KEY, SECRET)
    receiver = Receiver(check)
    pool = ClientPool()
    caplog.set_level(logging.WARNING, logger="relay.remote")
    try:
        for sigv4 in (f"{{region: {REGION}}}",  # nothing in the chain
                      f"{{region: {REGION}, access_key: WRONG, secret_key: '{SECRET}', "  # STS refuses
                      "role_arn: 'arn:aws:iam::123456789012:role/writer'}"):
            cfg = rw_config(f"{receiver.url}/api/v1/write", f"    sigv4: {sigv4}\n"
                            "    queue_config: {min_backoff: 50ms, max_backoff: 100ms}\n")
            writer = RemoteWriter(cfg, pool, SelfMetrics())
            async with anyio.create_task_group() as tg:
                await tg.start(writer.run)
                writer.push(make_batches(3, 1, "rw-sigv4-none", int(time.time()) * 1000)[0])
                assert not await writer.drain(1.0)
                tg.cancel_scope.cancel()
            assert writer.dropped == {} and writer.pending_samples == 3 and writer.sent_samples == 0
    finally:
        await pool.aclose()
        receiver.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("(sigv4), will retry: no AWS credentials found" in m for m in messages), messages
    assert any("(sigv4), will retry: assuming role arn:aws:iam::123456789012:role/writer" in m for m in messages)
    assert receiver.seen == [] and not any(SECRET in m for m in messages)
    with pytest.raises(SigV4Error):
        await SigV4Signer(SigV4Config(region=REGION)).sign(httpx.Request("GET", "http://127.0.0.1:1/"))


def test_config_errors(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = {
        "{region: eu-west-1, access_key: AK}": "access_key and secret_key must be given together",
        "{region: 'eu west'}": "is not an AWS region",
        "{role_arn: 'not-an-arn'}": "is not an IAM role ARN",
        "{external_id: x}": "can only be used with role_arn",
        "{region: eu-west-1, bogus: 1}": r"sigv4\.bogus: unknown key",
        "{tags: {a: b}}": "session tags are not supported",
    }
    for sigv4, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_config(f"remote_write:\n  - url: http://a/\n    sigv4: {sigv4}\n")
    with pytest.raises(ConfigError, match="at most one of basic_auth and sigv4"):
        parse_config("remote_write:\n  - url: http://a/\n    basic_auth: {username: u}\n    sigv4: {}\n")
    cfg = parse_config("remote_write:\n  - url: http://a/\n    sigv4: {}\n").remote_write[0]
    pool = ClientPool()
    with pytest.raises(ConfigError, match=r"remote_write\[0\]\.sigv4\.region: is not set"):
        pool.validate(cfg.http, "remote_write[0]")
    monkeypatch.setitem(sys.modules, "botocore", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"sigv4: needs botocore.*pip install 'etcd-metrics-relay\[aws\]'"):
        pool.validate(cfg.http, "remote_write[0]")
