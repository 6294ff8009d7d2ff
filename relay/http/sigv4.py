"""AWS Signature Version 4 for remote write to Amazon Managed Service for Prometheus: `SigV4Signer`.

Signing is botocore's (``SigV4Auth``, the AWS SDK for Python's own signer), as Prometheus uses the
AWS SDK for Go's; credentials come from ``access_key``/``secret_key``, or from the AWS default chain
(environment, the shared files' ``profile``, container or instance role), and ``role_arn`` is
assumed through STS with botocore's refreshing credentials::

    signer = SigV4Signer(SigV4Config(region="eu-west-1"))   # ConfigError without botocore or region
    await signer.sign(request)     # X-Amz-Date, X-Amz-Security-Token (if any), Authorization

botocore is an optional dependency (``pip install 'etcd-metrics-relay[aws]'``): importing it costs
about 0.3 s and 21 MB of memory, which a relay that does not sign should not pay. It is imported
only when a config has ``sigv4``. Credentials that may need the network (a role, the instance
metadata service) are looked up in a worker thread, never on the event loop; a failure is a
`SigV4Error` (reason ``sigv4``), so remote write retries.
"""

from __future__ import annotations

import os
from typing import Any

import anyio.to_thread
import httpx

from .._exceptions import ConfigError, SigV4Error
from ..config_http import SigV4Config

__all__ = ["SigV4Signer", "import_botocore"]

# Headers a proxy or the transport may change, or that botocore leaves out anyway.
_UNSIGNED = frozenset(("authorization", "user-agent", "connection", "expect", "x-amzn-trace-id",
                       "uber-trace-id", "x-amz-date", "x-amz-security-token"))


def import_botocore(where: str = "sigv4") -> Any:
    """botocore's modules (auth, awsrequest, credentials, session), or a ConfigError saying how to get them."""
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.config
        import botocore.credentials
        import botocore.exceptions
        import botocore.session
    except ImportError:
        raise ConfigError(where, "needs botocore, the AWS SDK's signing library: "
                          "pip install 'etcd-metrics-relay[aws]' (or pip install botocore)") from None
    return botocore


class SigV4Signer:
    """Signs requests for one ``sigv4`` config; see the module docstring."""

    def __init__(self, cfg: SigV4Config, where: str = "sigv4") -> None:
        bc = import_botocore(where)
        self._bc = bc
        self.cfg = cfg
        try:
            self._session = bc.session.Session(profile=cfg.profile or None)
            # AWS_REGION: what the Go SDK (so Prometheus) reads; botocore reads AWS_DEFAULT_REGION
            region = cfg.region or os.environ.get("AWS_REGION") or self._session.get_config_variable("region")
        except bc.exceptions.ProfileNotFound:
            raise ConfigError(f"{where}.profile", f"AWS profile {cfg.profile!r} is not in the shared config or "
                              "credentials file") from None
        except bc.exceptions.BotoCoreError as exc:
            raise ConfigError(where, f"AWS settings: {exc}") from None
        if not region:
            raise ConfigError(f"{where}.region", "is not set, and the AWS environment has no default region "
                              "(AWS_REGION, AWS_DEFAULT_REGION, or region in the profile)")
        self.region: str = region
        self._credentials: Any = None
        if cfg.access_key and cfg.secret_key is not None and not cfg.role_arn:
            self._credentials = bc.credentials.Credentials(cfg.access_key, cfg.secret_key.reveal())

    def _resolve(self) -> Any:
        """The credentials to sign with (blocking: may ask STS or the instance metadata service)."""
        bc, cfg = self._bc, self.cfg
        if cfg.access_key and cfg.secret_key is not None:
            base = bc.credentials.Credentials(cfg.access_key, cfg.secret_key.reveal())
        else:
            base = self._session.get_credentials()
        if base is None:
            raise SigV4Error("no AWS credentials found (access_key/secret_key, the environment, the shared "
                             "credentials file, or a container or instance role)")
        if not cfg.role_arn:
            return base
        extra: dict[str, str] = {"RoleSessionName": cfg.session_name or "etcd-metrics-relay"}
        if cfg.external_id:
            extra["ExternalId"] = cfg.external_id
        client_config = bc.config.Config(use_fips_endpoint=True) if cfg.use_fips_sts_endpoint else None

        def create_client(service: str, **kwargs: Any) -> Any:
            return self._session.create_client(service, region_name=self.region, config=client_config, **kwargs)

        fetcher = bc.credentials.AssumeRoleCredentialFetcher(create_client, base, cfg.role_arn, extra_args=extra)
        return bc.credentials.DeferredRefreshableCredentials(method="assume-role",
                                                            refresh_using=fetcher.fetch_credentials)

    async def _frozen(self) -> Any:
        bc = self._bc
        try:
            if self._credentials is None:
                self._credentials = await anyio.to_thread.run_sync(self._resolve)
            creds = self._credentials
            if isinstance(creds, bc.credentials.RefreshableCredentials) and creds.refresh_needed():
                return await anyio.to_thread.run_sync(creds.get_frozen_credentials)
            return creds.get_frozen_credentials()
        except SigV4Error:
            raise
        except (bc.exceptions.BotoCoreError, bc.exceptions.ClientError) as exc:
            self._credentials = None if not self.cfg.access_key or self.cfg.role_arn else self._credentials
            what = f"assuming role {self.cfg.role_arn}" if self.cfg.role_arn else "getting AWS credentials"
            raise SigV4Error(f"{what}: {str(exc)[:300]}") from None

    async def sign(self, request: httpx.Request) -> None:
        """Add the signature headers to ``request`` (its body is signed too)."""
        frozen = await self._frozen()
        self.sign_with(request, frozen)

    def sign_with(self, request: httpx.Request, credentials: Any) -> None:
        """Sign with given (frozen) credentials: the synchronous part, for tests and vectors."""
        bc = self._bc
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _UNSIGNED}
        aws = bc.awsrequest.AWSRequest(method=request.method, url=str(request.url), data=request.content,
                                       headers=headers)
        bc.auth.SigV4Auth(credentials, self.cfg.service_name, self.region).add_auth(aws)
        for name in ("X-Amz-Date", "X-Amz-Security-Token", "Authorization"):
            value = aws.headers.get(name)
            if value is not None:
                request.headers[name] = value
