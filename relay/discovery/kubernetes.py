"""``kubernetes_sd_configs``: targets from a Kubernetes API server, listed and then watched.

Each role makes the targets and the ``__meta_kubernetes_*`` labels of Prometheus v2.42's
Kubernetes discovery (the oracle the tests compare against): ``endpoints``, ``endpointslice``
(both joined through each address's ``targetRef`` to its pod, and through their name or
``kubernetes.io/service-name`` label to their service), ``pod``, ``service``, ``node`` and
``ingress``. ``attach_metadata.node`` adds the node's name and labels (pod, endpoints,
endpointslice); ``attach_metadata.namespace`` adds the namespace's labels and annotations.

Every object kind is kept current as client-go's informers do: a paged list (``limit`` and
``continue``), then a watch from the list's resourceVersion with bookmarks; a 410 Gone (as a status
or as an ERROR event) lists again; a dropped, failed, garbled or silent stream is watched again
from the last resourceVersion after a backoff. One :class:`Watcher` per (API server, resource,
namespace, selectors) is shared by every job that needs it (:class:`KubernetesHub`). A provider
sends the full list of its groups a moment (``Tuning.debounce``) after any of its objects changed.

Errors (no API server, 401, 403 with the verb and resource RBAC must allow, bad events) keep the
last listed objects, and are logged once per change of state.

No Kubernetes client library: a list and a watch are two GETs and a stream of JSON lines, done
here on the relay's own HTTP client pool (one TLS/auth setup for everything, one event loop);
the official async clients bring a second HTTP stack (aiohttp) and their generated models, which
are far larger than the handful of fields read here.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.abc
import orjson
import yaml

from .._exceptions import HTTPError, HTTPTimeout
from ..config import Authorization, BasicAuth, HTTPClientConfig, KubernetesSDConfig, TLSConfig
from ..http.client import ClientPool, StreamResponse
from .base import DiscoveryError, Provider, Send, TargetGroup

__all__ = ["Connection", "KubernetesHub", "KubernetesSDProvider", "Stores", "Tuning", "Watcher", "build_groups",
           "resolve_connection"]

log = logging.getLogger("relay.discovery.kubernetes")

META = "__meta_kubernetes_"
# In-cluster credentials; RELAY_SERVICE_ACCOUNT_DIR names another folder (a non-standard mount, tests).
SERVICE_ACCOUNT_DIR = os.environ.get("RELAY_SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")

# role or object kind -> (API group path, resource, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "endpoints": ("/api/v1", "endpoints", True),
    "endpointslice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "pod": ("/api/v1", "pods", True),
    "service": ("/api/v1", "services", True),
    "node": ("/api/v1", "nodes", False),
    "ingress": ("/apis/networking.k8s.io/v1", "ingresses", True),
    "namespace": ("/api/v1", "namespaces", False),
}

Obj = dict[str, Any]


# -- connection ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate; equal connections share watchers."""

    server: str
    http: HTTPClientConfig = field(default_factory=HTTPClientConfig)
    namespace: str = ""  # the relay's own namespace (in-cluster), for namespaces.own_namespace


def _data_file(data: str, suffix: str, where: str) -> str:
    """A private file holding a kubeconfig's inline ``*-data`` (base64) value (TLS wants files)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise DiscoveryError(f"{where}: is not base64") from None
    folder = Path(tempfile.gettempdir()) / f"relay-kubeconfig-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / (hashlib.sha256(raw).hexdigest()[:24] + suffix)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    return str(path)


def _named(doc: Mapping[str, Any], kind: str, name: str, where: str) -> Mapping[str, Any]:
    for entry in doc.get(kind + "s") or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            body = entry.get(kind)
            return body if isinstance(body, Mapping) else {}
    raise DiscoveryError(f"{where}: no {kind} named {name!r}")


def _kubeconfig(path: str) -> Connection:
    """The server, CA, client certificate and token of a kubeconfig's current context."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise DiscoveryError(f"kubeconfig_file {path}: cannot read: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, Mapping):
        raise DiscoveryError(f"kubeconfig_file {path}: not a kubeconfig (no mapping)")
    current = doc.get("current-context")
    if not current:
        raise DiscoveryError(f"kubeconfig_file {path}: no current-context")
    ctx = _named(doc, "context", current, f"kubeconfig_file {path}")
    cluster = _named(doc, "cluster", str(ctx.get("cluster", "")), f"kubeconfig_file {path}: context {current!r}")
    user = _named(doc, "user", str(ctx.get("user", "")), f"kubeconfig_file {path}: context {current!r}") \
        if ctx.get("user") else {}
    base = Path(path).parent

    def file_of(m: Mapping[str, Any], key: str, suffix: str) -> str | None:
        if m.get(key + "-data"):
            return _data_file(str(m[key + "-data"]), suffix, f"kubeconfig_file {path}: {key}-data")
        if m.get(key):
            p = Path(str(m[key]))
            return str(p if p.is_absolute() else base / p)
        return None

    server = str(cluster.get("server", "")).rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise DiscoveryError(f"kubeconfig_file {path}: cluster server {server!r} is not an http(s) URL")
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise DiscoveryError(f"kubeconfig_file {path}: user {unsupported} plugins are not supported; "
                                 "use a token, tokenFile or client certificate")
    tls = TLSConfig(
        ca_file=file_of(cluster, "certificate-authority", ".crt"),
        cert_file=file_of(user, "client-certificate", ".crt"),
        key_file=file_of(user, "client-key", ".key"),
        server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        insecure_skip_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
    )
    auth: Authorization | None = None
    basic: BasicAuth | None = None
    from ..config import Secret

    if user.get("token"):
        auth = Authorization(credentials=Secret(str(user["token"])))
    elif user.get("tokenFile"):
        p = Path(str(user["tokenFile"]))
        auth = Authorization(credentials_file=str(p if p.is_absolute() else base / p))
    elif user.get("username"):
        basic = BasicAuth(username=str(user["username"]), password=Secret(str(user.get("password", ""))))
    return Connection(server, HTTPClientConfig(tls_config=tls, basic_auth=basic, authorization=auth),
                      str(ctx.get("namespace", "")))


def _in_cluster() -> Connection:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise DiscoveryError("not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST and _PORT are unset): "
                             "set api_server or kubeconfig_file")
    sa = Path(SERVICE_ACCOUNT_DIR)
    token, ca = sa / "token", sa / "ca.crt"
    if not token.exists():
        raise DiscoveryError(f"in-cluster: no service-account token at {token}")
    try:
        namespace = (sa / "namespace").read_text().strip()
    except OSError:
        namespace = ""
    if ":" in host:
        host = f"[{host}]"
    # The token is read again whenever the file changes (bound tokens rotate every hour or so).
    http = HTTPClientConfig(tls_config=TLSConfig(ca_file=str(ca) if ca.exists() else None),
                            authorization=Authorization(credentials_file=str(token)))
    return Connection(f"https://{host}:{port}", http, namespace)


def resolve_connection(cfg: KubernetesSDConfig) -> Connection:
    """The API server and client settings of ``cfg``: explicit, from a kubeconfig, or in-cluster."""
    if cfg.api_server:
        return Connection(cfg.api_server, cfg.http)
    if cfg.kubeconfig_file:
        return _kubeconfig(cfg.kubeconfig_file)
    return _in_cluster()


MAX_LIST_PAGE = 256 << 20  # one page of a list (limit=500 objects) is far below this


class _Api:
    """The two HTTP calls discovery makes. The only place that touches the client pool."""

    def __init__(self, conn: Connection, clients: ClientPool) -> None:
        self.conn = conn
        self.clients = clients

    def _url(self, path: str, params: dict[str, str]) -> str:
        return f"{self.conn.server}{path}?{urlencode(params)}" if params else self.conn.server + path

    async def get_json(self, path: str, params: dict[str, str], timeout: float) -> tuple[int, Any]:
        client = self.clients.get(self.conn.http)
        resp = await client.get(self._url(path, params), headers={"Accept": "application/json"}, timeout=timeout,
                                limit=MAX_LIST_PAGE)
        try:
            return resp.status_code, orjson.loads(resp.content) if resp.content else None
        except orjson.JSONDecodeError:
            return resp.status_code, None

    @asynccontextmanager
    async def stream(self, path: str, params: dict[str, str], read_timeout: float) -> AsyncIterator[StreamResponse]:
        client = self.clients.get(self.conn.http)
        async with client.stream("GET", self._url(path, params), headers={"Accept": "application/json"},
                                 timeout=10.0, read_timeout=read_timeout) as resp:
            yield resp


# -- list and watch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tuning:
    page_size: int = 500
    watch_timeout: tuple[int, int] = (300, 600)  # timeoutSeconds of a watch, random in this range
    idle_margin: float = 60.0  # a stream silent for watch_timeout + this is dropped and re-opened
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    debounce: float = 0.5  # a provider sends this long after the first change of a burst
    linger: float = 5.0  # a watcher nobody uses stops after this (a reload re-subscribes sooner)
    request_timeout: float = 30.0


class _Gone(Exception):
    """The resourceVersion is too old: list again."""


class _Failure(Exception):
    """A list or watch failed; the message says what and why."""


class _Dropped(Exception):
    """A healthy watch stream was cut (an API server restart, a proxy's idle timeout): watch again."""


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


def _status_message(status: int, body: Any, verb: str, what: str) -> str:
    detail = body.get("message", "") if isinstance(body, dict) else ""
    if status == 401:
        return f"HTTP 401 Unauthorized to {verb} {what}: the credentials are missing, expired or rejected"
    if status == 403:
        return (f"HTTP 403 Forbidden: RBAC does not allow {verb} on {what}; grant get, list, watch on it "
                f"to the relay's service account ({detail})" if detail else
                f"HTTP 403 Forbidden: RBAC does not allow {verb} on {what}; grant get, list, watch on it")
    return f"HTTP {status} for {verb} {what}" + (f": {detail}" if detail else "")


class Watcher:
    """The current objects of one resource (in one namespace, with one set of selectors)."""

    def __init__(self, api: _Api, kind: str, namespace: str, label: str, field_: str, tuning: Tuning) -> None:
        group, resource, namespaced = RESOURCES[kind]
        self.api = api
        self.kind = kind
        self.path = f"{group}/namespaces/{namespace}/{resource}" if namespaced and namespace else f"{group}/{resource}"
        self.what = f"{resource} " + (f"in namespace {namespace!r}" if namespaced and namespace else
                                      "cluster-wide" if namespaced else "")
        self.what = self.what.strip() + f" ({api.conn.server})"
        self.selectors = {k: v for k, v in (("labelSelector", label), ("fieldSelector", field_)) if v}
        self.tuning = tuning
        self.objects: dict[str, Obj] = {}
        self.rv: str | None = None  # the resourceVersion the objects are at (None: list first)
        self.synced = anyio.Event()
        self.listeners: set[Callable[[], None]] = set()
        self.error_listeners: set[Callable[[str], None]] = set()  # each failed list or watch attempt
        self.state = ""  # the current error, "" when healthy
        # The current error came from a stream's content (a malformed event, a silent stream): a
        # new stream that opens is not yet a recovery, its first good line (or clean end) is.
        self._content_error = False
        self.lists = 0
        self.watches = 0
        self.events = 0

    def _changed(self) -> None:
        for fn in list(self.listeners):
            fn()

    def _set_state(self, error: str) -> None:
        if error == self.state:
            return
        if error:
            log.error("kubernetes_sd: %s (keeping the %d objects listed before)", error, len(self.objects))
        else:
            log.info("kubernetes_sd: %s: listed and watching again", self.what)
        self.state = error

    async def _list(self) -> str:
        """One full, paged list: replaces the objects; returns the list's resourceVersion."""
        items: dict[str, Obj] = {}
        params = {"limit": str(self.tuning.page_size), **self.selectors}
        restarted = False
        while True:
            try:
                status, body = await self.api.get_json(self.path, params, self.tuning.request_timeout)
            except (HTTPError, OSError) as exc:
                raise _Failure(f"cannot list {self.what}: {exc.__class__.__name__}: {exc}") from None
            if status == 410 and "continue" in params and not restarted:
                # The continue token expired mid-list: start over, once, from a fresh list.
                items, restarted = {}, True
                params = {"limit": str(self.tuning.page_size), **self.selectors}
                continue
            if status != 200:
                raise _Failure(_status_message(status, body, "list", self.what))
            if not isinstance(body, dict) or not isinstance(body.get("items"), list | None):
                raise _Failure(f"list {self.what}: the answer is not a Kubernetes list")
            for obj in body.get("items") or []:
                if isinstance(obj, dict):
                    items[_key(obj)] = obj
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self.objects = items
                self.lists += 1
                return str(meta.get("resourceVersion", ""))
            params["continue"] = str(token)

    async def _watch(self) -> None:
        """One watch stream from ``self.rv``, which follows every event and bookmark (a stream that
        breaks is watched again from where it got to)."""
        rv = self.rv or ""
        lo, hi = self.tuning.watch_timeout
        timeout = random.randint(lo, hi)
        params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(timeout), **self.selectors}
        idle = timeout + self.tuning.idle_margin
        opened = False
        try:
            async with self.api.stream(self.path, params, idle) as resp:
                if resp.status_code == 410:
                    raise _Gone()
                if resp.status_code != 200:
                    body = await resp.read(1 << 20)
                    try:
                        parsed = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        parsed = None
                    raise _Failure(_status_message(resp.status_code, parsed, "watch", self.what))
                self.watches += 1
                if not self._content_error:
                    self._set_state("")
                opened = True
                buf = b""
                async for chunk in resp.aiter_bytes():
                    buf += chunk
                    if len(buf) > 64 << 20:
                        raise _Failure(f"watch {self.what}: an event larger than 64 MiB")
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if line.strip():
                            rv = self.rv = self._apply(line, rv)
                            self._recovered()
                if buf.strip():
                    rv = self.rv = self._apply(buf, rv)
                self._recovered()  # a clean end
        except _Failure:
            self._content_error = opened
            raise
        except HTTPTimeout as exc:
            self._content_error = opened
            if exc.phase != "read":
                raise _Failure(f"watch {self.what}: {exc}") from None
            raise _Failure(f"watch {self.what}: the stream sent nothing for {idle:g} s") from None
        except (HTTPError, OSError) as exc:
            if opened:
                raise _Dropped(f"watch {self.what}: {exc.__class__.__name__}: {exc}") from None
            raise _Failure(f"watch {self.what}: {exc.__class__.__name__}: {exc}") from None

    def _recovered(self) -> None:
        if self._content_error:
            self._content_error = False
            self._set_state("")

    def _apply(self, line: bytes, rv: str) -> str:
        try:
            event = orjson.loads(line)
            kind, obj = event["type"], event["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a mapping")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise _Failure(f"watch {self.what}: malformed event ({exc}): {line[:120]!r}") from None
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion", "")) or rv
        self.events += 1
        if kind in ("ADDED", "MODIFIED"):
            self.objects[_key(obj)] = obj
        elif kind == "DELETED":
            self.objects.pop(_key(obj), None)
        elif kind == "BOOKMARK":
            return new_rv
        elif kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise _Failure(f"watch {self.what}: error event: {obj.get('code')} {obj.get('message', '')}")
        else:
            raise _Failure(f"watch {self.what}: unknown event type {kind!r}")
        self._changed()
        return new_rv

    async def run(self) -> None:
        delay = self.tuning.backoff_min
        while True:
            started = anyio.current_time()
            try:
                if self.rv is None:
                    self.rv = await self._list()
                    self._content_error = False
                    self._set_state("")
                    self.synced.set()
                    self._changed()
                await self._watch()
                if anyio.current_time() - started > 1.0:
                    delay = self.tuning.backoff_min
                    continue  # the server ended a long watch (its timeout): watch on at once
            except _Gone:
                log.info("kubernetes_sd: %s: resourceVersion %s is gone (410), listing again", self.what, self.rv)
                self.rv = None
                continue
            except _Dropped as exc:
                log.debug("kubernetes_sd: %s; watching again", exc)
                delay = self.tuning.backoff_min
            except _Failure as exc:
                self._set_state(str(exc))
                for fn in list(self.error_listeners):
                    fn(str(exc))
            await anyio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.tuning.backoff_max)


@dataclass
class _Shared:
    watcher: Watcher
    scope: anyio.CancelScope
    refs: int = 0


class KubernetesHub:
    """The watchers of all jobs: one per (connection, kind, namespace, selectors), shared."""

    def __init__(self, clients: ClientPool, tuning: Tuning | None = None) -> None:
        self.clients = clients
        self.tuning = tuning or Tuning()
        self.tg: anyio.abc.TaskGroup | None = None
        self.shared: dict[tuple[Connection, str, str, str, str], _Shared] = {}

    def subscribe(self, conn: Connection, kind: str, namespace: str, label: str, field_: str,
                  listener: Callable[[], None], on_error: Callable[[str], None] | None = None) -> Watcher:
        assert self.tg is not None, "KubernetesHub.tg is set by its owner before use"
        key = (conn, kind, namespace, label, field_)
        entry = self.shared.get(key)
        if entry is None:
            w = Watcher(_Api(conn, self.clients), kind, namespace, label, field_, self.tuning)
            entry = self.shared[key] = _Shared(w, anyio.CancelScope())
            self.tg.start_soon(self._run, entry)
        entry.refs += 1
        entry.watcher.listeners.add(listener)
        if on_error is not None:
            entry.watcher.error_listeners.add(on_error)
        return entry.watcher

    def unsubscribe(self, watcher: Watcher, listener: Callable[[], None],
                    on_error: Callable[[str], None] | None = None) -> None:
        watcher.listeners.discard(listener)
        if on_error is not None:
            watcher.error_listeners.discard(on_error)
        for key, entry in self.shared.items():
            if entry.watcher is watcher:
                entry.refs -= 1
                if entry.refs <= 0 and self.tg is not None:
                    self.tg.start_soon(self._linger, key, entry)
                return

    async def _linger(self, key: tuple[Connection, str, str, str, str], entry: _Shared) -> None:
        await anyio.sleep(self.tuning.linger)
        if entry.refs <= 0 and self.shared.get(key) is entry:
            del self.shared[key]
            entry.scope.cancel()

    async def _run(self, entry: _Shared) -> None:
        with entry.scope:
            await entry.watcher.run()


# -- roles ---------------------------------------------------------------------------------------

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _sanitize(name: str) -> str:
    return _INVALID.sub("_", name)


def _meta_labels(out: dict[str, str], prefix: str, obj: Obj, *, annotations: bool = True) -> None:
    meta = obj.get("metadata") or {}
    for k, v in (meta.get("labels") or {}).items():
        ln = _sanitize(k)
        out[f"{META}{prefix}_label_{ln}"] = str(v)
        out[f"{META}{prefix}_labelpresent_{ln}"] = "true"
    if annotations:
        for k, v in (meta.get("annotations") or {}).items():
            ln = _sanitize(k)
            out[f"{META}{prefix}_annotation_{ln}"] = str(v)
            out[f"{META}{prefix}_annotationpresent_{ln}"] = "true"


def _join(host: str, port: Any) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _ns(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("namespace", ""))


def pod_labels(pod: Obj) -> dict[str, str]:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    ready = "unknown"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = str(cond.get("status", "")).lower()
            break
    out = {
        f"{META}pod_name": str(meta.get("name", "")),
        f"{META}pod_ip": str(status.get("podIP", "")),
        f"{META}pod_ready": ready,
        f"{META}pod_phase": str(status.get("phase", "")),
        f"{META}pod_node_name": str(spec.get("nodeName", "")),
        f"{META}pod_host_ip": str(status.get("hostIP", "")),
        f"{META}pod_uid": str(meta.get("uid", "")),
    }
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            if ref.get("kind"):
                out[f"{META}pod_controller_kind"] = str(ref["kind"])
            if ref.get("name"):
                out[f"{META}pod_controller_name"] = str(ref["name"])
            break
    _meta_labels(out, "pod", pod)
    return out


def service_labels(svc: Obj) -> dict[str, str]:
    out = {f"{META}service_name": _name(svc), f"{META}namespace": _ns(svc)}
    _meta_labels(out, "service", svc)
    return out


def node_labels(node: Obj) -> dict[str, str]:
    out = {f"{META}node_name": _name(node), f"{META}node_provider_id": str((node.get("spec") or {}).get("providerID", ""))}
    _meta_labels(out, "node", node)
    return out


@dataclass
class Stores:
    """The objects a role's targets are built from, keyed ``namespace/name`` (``name`` if cluster-wide)."""

    main: dict[str, Obj] = field(default_factory=dict)
    services: dict[str, Obj] = field(default_factory=dict)
    pods: dict[str, Obj] = field(default_factory=dict)
    nodes: dict[str, Obj] = field(default_factory=dict)
    namespaces: dict[str, Obj] = field(default_factory=dict)
    attach_node: bool = False
    attach_namespace: bool = False

    def node_meta(self, name: str | None) -> dict[str, str]:
        """attach_metadata.node: the node's name and labels, as Prometheus adds them."""
        if not self.attach_node or name is None:
            return {}
        node = self.nodes.get(name)
        if node is None:
            return {}
        out = {f"{META}node_name": name}
        _meta_labels(out, "node", node, annotations=False)
        return out

    def namespace_meta(self, name: str) -> dict[str, str]:
        if not self.attach_namespace:
            return {}
        ns = self.namespaces.get(name)
        out: dict[str, str] = {}
        if ns is not None:
            _meta_labels(out, "namespace", ns)
        return out


def _groups(source: str, group: dict[str, str], targets: list[dict[str, str]]) -> list[TargetGroup]:
    """One of our groups per target (each target has its own labels; target labels win)."""
    out = []
    for i, t in enumerate(targets):
        labels = {**group, **t}
        address = labels.pop("__address__")
        # An empty value is no label, in Prometheus' label sets (its discoveredLabels omit them too).
        kept = tuple(sorted((k, v) for k, v in labels.items() if v != ""))
        out.append(TargetGroup(source=f"{source}#{i}", targets=(address,), labels=kept))
    return out


def _container_port_labels(c: Obj, cport: Obj, port: Any, protocol: str) -> dict[str, str]:
    return {
        f"{META}pod_container_name": str(c.get("name", "")),
        f"{META}pod_container_image": str(c.get("image", "")),
        f"{META}pod_container_port_name": str(cport.get("name", "")),
        f"{META}pod_container_port_number": str(port),
        f"{META}pod_container_port_protocol": protocol,
    }


def _pod_of(stores: Stores, ref: Any) -> Obj | None:
    if not isinstance(ref, dict) or ref.get("kind") != "Pod":
        return None
    return stores.pods.get(f"{ref.get('namespace', '')}/{ref.get('name', '')}")


def _unlisted_ports(seen: dict[str, tuple[Obj, list[Any]]]) -> list[dict[str, str]]:
    """Targets for the container ports of joined pods that no endpoint port covers."""
    out = []
    for pod, ports in seen.values():
        ip = str((pod.get("status") or {}).get("podIP", ""))
        for c in (pod.get("spec") or {}).get("containers") or []:
            for cport in c.get("ports") or []:
                number = cport.get("containerPort")
                if number in ports:
                    continue
                t = {"__address__": _join(ip, number),
                     **_container_port_labels(c, cport, number, str(cport.get("protocol", "")))}
                out.append({**t, **pod_labels(pod)})
    return out


def _endpoints(stores: Stores, eps: Obj) -> list[TargetGroup]:
    ns, name = _ns(eps), _name(eps)
    group = {f"{META}namespace": ns, f"{META}endpoints_name": name}
    svc = stores.services.get(f"{ns}/{name}")
    if svc is not None:
        group.update(service_labels(svc))
    _meta_labels(group, "endpoints", eps, annotations=False)
    group.update(stores.namespace_meta(ns))
    targets: list[dict[str, str]] = []
    seen: dict[str, tuple[Obj, list[Any]]] = {}

    def add(addr: Obj, port: Obj, ready: str) -> None:
        t = {
            "__address__": _join(str(addr.get("ip", "")), port.get("port", 0)),
            f"{META}endpoint_port_name": str(port.get("name", "")),
            f"{META}endpoint_port_protocol": str(port.get("protocol", "")),
            f"{META}endpoint_ready": ready,
        }
        ref = addr.get("targetRef")
        if isinstance(ref, dict):
            t[f"{META}endpoint_address_target_kind"] = str(ref.get("kind", ""))
            t[f"{META}endpoint_address_target_name"] = str(ref.get("name", ""))
        if addr.get("nodeName") is not None:
            t[f"{META}endpoint_node_name"] = str(addr["nodeName"])
        if addr.get("hostname"):
            t[f"{META}endpoint_hostname"] = str(addr["hostname"])
        t.update(stores.node_meta(addr.get("nodeName")))
        pod = _pod_of(stores, ref)
        if pod is None:
            targets.append(t)
            return
        entry = seen.setdefault(f"{_ns(pod)}/{_name(pod)}", (pod, []))
        t.update(pod_labels(pod))
        for c in (pod.get("spec") or {}).get("containers") or []:
            for cport in c.get("ports") or []:
                if cport.get("containerPort") == port.get("port"):
                    t.update(_container_port_labels(c, cport, port.get("port"), str(port.get("protocol", ""))))
                    break
        entry[1].append(port.get("port"))
        targets.append(t)

    for subset in eps.get("subsets") or []:
        for port in subset.get("ports") or []:
            for addr in subset.get("addresses") or []:
                add(addr, port, "true")
            for addr in subset.get("notReadyAddresses") or []:
                add(addr, port, "false")
    targets += _unlisted_ports(seen)
    return _groups(f"endpoints/{ns}/{name}", group, targets)


def _endpointslice(stores: Stores, es: Obj) -> list[TargetGroup]:
    ns, name = _ns(es), _name(es)
    group = {f"{META}namespace": ns, f"{META}endpointslice_name": name,
             f"{META}endpointslice_address_type": str(es.get("addressType", ""))}
    svc_name = ((es.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
    svc = stores.services.get(f"{ns}/{svc_name}") if svc_name is not None else None
    if svc is not None:
        group.update(service_labels(svc))
    group.update(stores.namespace_meta(ns))
    targets: list[dict[str, str]] = []
    seen: dict[str, tuple[Obj, list[Any]]] = {}
    prefix = f"{META}endpointslice_"
    for ep in es.get("endpoints") or []:
        cond = ep.get("conditions") or {}
        for port in es.get("ports") or []:
            for addr in ep.get("addresses") or []:
                t = {"__address__": _join(str(addr), port["port"]) if port.get("port") is not None else str(addr)}
                for key, label in (("name", "port_name"), ("protocol", "port_protocol"), ("port", "port"),
                                   ("appProtocol", "port_app_protocol")):
                    if port.get(key) is not None:
                        t[prefix + label] = str(port[key])
                for key in ("ready", "serving", "terminating"):
                    if cond.get(key) is not None:
                        t[f"{prefix}endpoint_conditions_{key}"] = "true" if cond[key] else "false"
                if ep.get("hostname") is not None:
                    t[prefix + "endpoint_hostname"] = str(ep["hostname"])
                ref = ep.get("targetRef")
                if isinstance(ref, dict):
                    t[prefix + "address_target_kind"] = str(ref.get("kind", ""))
                    t[prefix + "address_target_name"] = str(ref.get("name", ""))
                for k, v in (ep.get("deprecatedTopology") or {}).items():
                    ln = _sanitize(k)
                    t[f"{prefix}endpoint_topology_{ln}"] = str(v)
                    t[f"{prefix}endpoint_topology_present_{ln}"] = "true"
                t.update(stores.node_meta(ep.get("nodeName")))
                pod = _pod_of(stores, ref)
                if pod is None:
                    targets.append(t)
                    continue
                entry = seen.setdefault(f"{_ns(pod)}/{_name(pod)}", (pod, []))
                t.update(pod_labels(pod))
                for c in (pod.get("spec") or {}).get("containers") or []:
                    for cport in c.get("ports") or []:
                        if port.get("port") is not None and cport.get("containerPort") == port["port"]:
                            t.update(_container_port_labels(c, cport, port["port"], str(cport.get("protocol", ""))))
                            break
                entry[1].append(port.get("port"))
                targets.append(t)
    targets += _unlisted_ports(seen)
    return _groups(f"endpointslice/{ns}/{name}", group, targets)


def _container_id(statuses: list[Obj], name: str) -> str:
    for s in statuses:
        if s.get("name") == name:
            return str(s.get("containerID", ""))
    return ""


def _pod(stores: Stores, pod: Obj) -> list[TargetGroup]:
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    ip = str(status.get("podIP", ""))
    if not ip:
        return []
    group = pod_labels(pod)
    group[f"{META}namespace"] = _ns(pod)
    group.update(stores.node_meta(spec.get("nodeName")))
    group.update(stores.namespace_meta(_ns(pod)))
    targets = []
    containers = [(c, False) for c in spec.get("containers") or []] + [(c, True) for c in spec.get("initContainers") or []]
    for c, init in containers:
        cid = _container_id(status.get("initContainerStatuses" if init else "containerStatuses") or [],
                            str(c.get("name", "")))
        base = {f"{META}pod_container_name": str(c.get("name", "")), f"{META}pod_container_id": cid,
                f"{META}pod_container_image": str(c.get("image", "")),
                f"{META}pod_container_init": "true" if init else "false"}
        if not c.get("ports"):
            targets.append({"__address__": ip, **base})
            continue
        for port in c["ports"]:
            number = port.get("containerPort", 0)
            targets.append({"__address__": _join(ip, number), **base,
                            f"{META}pod_container_port_number": str(number),
                            f"{META}pod_container_port_name": str(port.get("name", "")),
                            f"{META}pod_container_port_protocol": str(port.get("protocol", ""))})
    return _groups(f"pod/{_ns(pod)}/{_name(pod)}", group, targets)


def _service(stores: Stores, svc: Obj) -> list[TargetGroup]:
    spec = svc.get("spec") or {}
    group = service_labels(svc)
    group.update(stores.namespace_meta(_ns(svc)))
    kind = str(spec.get("type", ""))
    targets = []
    for port in spec.get("ports") or []:
        number = port.get("port", 0)
        t = {"__address__": _join(f"{_name(svc)}.{_ns(svc)}.svc", number),
             f"{META}service_port_name": str(port.get("name", "")),
             f"{META}service_port_number": str(number),
             f"{META}service_port_protocol": str(port.get("protocol", "")),
             f"{META}service_type": kind}
        if kind == "ExternalName":
            t[f"{META}service_external_name"] = str(spec.get("externalName", ""))
        else:
            t[f"{META}service_cluster_ip"] = str(spec.get("clusterIP", ""))
        if kind == "LoadBalancer":
            t[f"{META}service_loadbalancer_ip"] = str(spec.get("loadBalancerIP", ""))
        targets.append(t)
    return _groups(f"svc/{_ns(svc)}/{_name(svc)}", group, targets)


_NODE_ADDRESS_ORDER = ("InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "LegacyHostIP", "Hostname")


def _node(stores: Stores, node: Obj) -> list[TargetGroup]:
    status = node.get("status") or {}
    by_type: dict[str, list[str]] = {}
    for a in status.get("addresses") or []:
        by_type.setdefault(str(a.get("type", "")), []).append(str(a.get("address", "")))
    chosen = next((by_type[t][0] for t in _NODE_ADDRESS_ORDER if t in by_type), None)
    if chosen is None:
        return []
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port", 0)
    t = {"__address__": _join(chosen, port), "instance": _name(node)}
    for kind, addrs in by_type.items():
        t[_sanitize(f"{META}node_address_{kind}")] = addrs[0]
    return _groups(f"node/{_name(node)}", node_labels(node), [t])


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == host:
        return True
    pp, hp = pattern.split("."), host.split(".")
    return bool(pp) and pp[0] == "*" and len(pp) == len(hp) and pp[1:] == hp[1:]


def _ingress(stores: Stores, ing: Obj) -> list[TargetGroup]:
    spec = ing.get("spec") or {}
    group = {f"{META}ingress_name": _name(ing), f"{META}namespace": _ns(ing)}
    if spec.get("ingressClassName") is not None:
        group[f"{META}ingress_class_name"] = str(spec["ingressClassName"])
    _meta_labels(group, "ingress", ing)
    group.update(stores.namespace_meta(_ns(ing)))
    tls_hosts = [h for tls in spec.get("tls") or [] for h in tls.get("hosts") or []]
    targets = []
    for rule in spec.get("rules") or []:
        host = str(rule.get("host", ""))
        http = rule.get("http")
        paths = ["/"] if not http else [str(p.get("path") or "/") for p in http.get("paths") or []]
        scheme = "https" if any(_host_matches(p, host) for p in tls_hosts) else "http"
        for path in paths:
            targets.append({"__address__": host, f"{META}ingress_scheme": scheme, f"{META}ingress_host": host,
                            f"{META}ingress_path": path})
    return _groups(f"ingress/{_ns(ing)}/{_name(ing)}", group, targets)


_BUILDERS: dict[str, Callable[[Stores, Obj], list[TargetGroup]]] = {
    "endpoints": _endpoints, "endpointslice": _endpointslice, "pod": _pod, "service": _service,
    "node": _node, "ingress": _ingress,
}


def _version(obj: Obj | None) -> object:
    if obj is None:
        return None
    # Every object from an API server has a resourceVersion; objects are replaced, never changed.
    return (obj.get("metadata") or {}).get("resourceVersion") or id(obj)


def _fingerprint(role: str, stores: Stores, obj: Obj) -> tuple[object, ...]:
    """The versions of ``obj`` and of every object its targets are joined with."""
    ns = _ns(obj)
    out: list[object] = [_version(obj)]
    if stores.attach_namespace:
        out.append(_version(stores.namespaces.get(ns)))
    if role == "endpoints":
        out.append(_version(stores.services.get(f"{ns}/{_name(obj)}")))
        addrs = [a for sub in obj.get("subsets") or [] for kind in ("addresses", "notReadyAddresses")
                 for a in sub.get(kind) or []]
        out += [_version(_pod_of(stores, a.get("targetRef"))) for a in addrs]
        if stores.attach_node:
            out += [_version(stores.nodes.get(str(a.get("nodeName")))) for a in addrs]
    elif role == "endpointslice":
        svc = ((obj.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
        out.append(_version(stores.services.get(f"{ns}/{svc}")))
        eps = obj.get("endpoints") or []
        out += [_version(_pod_of(stores, e.get("targetRef"))) for e in eps]
        if stores.attach_node:
            out += [_version(stores.nodes.get(str(e.get("nodeName")))) for e in eps]
    elif role == "pod" and stores.attach_node:
        out.append(_version(stores.nodes.get(str((obj.get("spec") or {}).get("nodeName")))))
    return tuple(out)


def build_groups(role: str, stores: Stores,
                 cache: dict[str, tuple[tuple[object, ...], list[TargetGroup]]] | None = None) -> list[TargetGroup]:
    """All target groups of ``role`` for the current objects, in a stable order.

    With ``cache`` (kept by the caller between calls), an object whose version and whose joined
    objects' versions are unchanged keeps its groups: a change costs the objects it touches.
    """
    build = _BUILDERS[role]
    out: list[TargetGroup] = []
    for key in sorted(stores.main):
        obj = stores.main[key]
        try:
            fp = _fingerprint(role, stores, obj) if cache is not None else ()
            hit = cache.get(key) if cache is not None else None
            if hit is not None and hit[0] == fp:
                out += hit[1]
                continue
            groups = build(stores, obj)
            if cache is not None:
                cache[key] = (fp, groups)
            out += groups
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            log.warning("kubernetes_sd: %s %s does not have the expected shape, skipped: %s", role, key, exc)
    if cache is not None:
        for gone in cache.keys() - stores.main.keys():
            del cache[gone]
    return out


# -- the provider --------------------------------------------------------------------------------


class KubernetesSDProvider(Provider):
    """One ``kubernetes_sd_configs`` entry: subscribes to the watchers it needs, sends its groups."""

    name = "kubernetes"

    def __init__(self, config: KubernetesSDConfig, job: str, hub: KubernetesHub) -> None:
        self.config = config
        self.job = job
        self.hub = hub
        self.last_error: str | None = None
        self._dirty = anyio.Event()
        self._subs: list[tuple[str, Watcher]] = []

    def _poke(self) -> None:
        self._dirty.set()

    def _watch_failed(self, error: str) -> None:
        self.failed(error)

    def current_error(self) -> str | None:
        """The connection's error, or those of the watchers this config reads (shared with others)."""
        if self.last_error is not None:
            return self.last_error
        errors = [w.state for _, w in self._subs if w.state]
        return "; ".join(errors) if errors else None

    def _namespaces(self, conn: Connection) -> list[str]:
        names = list(self.config.namespaces)
        if self.config.own_namespace and conn.namespace:
            names.append(conn.namespace)
        return names or [""]  # "" is every namespace

    async def _connect(self) -> Connection:
        delay = 1.0
        while True:
            try:
                conn = await anyio.to_thread.run_sync(resolve_connection, self.config)
                self.last_error = None
                return conn
            except DiscoveryError as exc:
                if self.last_error != str(exc):
                    log.error("kubernetes_sd for job %s: %s", self.job, exc)
                self.last_error = str(exc)
                self.failed(str(exc))
            await anyio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def run(self, send: Send) -> None:
        cfg, role = self.config, self.config.role
        conn = await self._connect()
        wanted: list[tuple[str, str, str, str]] = []  # (slot, kind, namespace, ...)
        subs = self._subs = []
        for ns in ([""] if role == "node" else self._namespaces(conn)):
            wanted.append(("main", role, ns, role))
            if role in ("endpoints", "endpointslice"):
                wanted += [("services", "service", ns, "service"), ("pods", "pod", ns, "pod")]
        if cfg.attach_node and role != "node":
            wanted.append(("nodes", "node", "", "node"))
        if cfg.attach_namespace and role != "node":
            wanted.append(("namespaces", "namespace", "", ""))
        try:
            for slot, kind, ns, sel_role in wanted:
                label, fld = cfg.selector(sel_role) if sel_role else ("", "")
                subs.append((slot, self.hub.subscribe(conn, kind, ns, label, fld, self._poke, self._watch_failed)))
            for _, w in subs:
                await w.synced.wait()
            last: list[TargetGroup] | None = None
            cache: dict[str, tuple[tuple[object, ...], list[TargetGroup]]] = {}
            while True:
                self._dirty = anyio.Event()
                stores = Stores(attach_node=cfg.attach_node, attach_namespace=cfg.attach_namespace)
                for slot, w in subs:
                    getattr(stores, slot).update(w.objects)
                groups = build_groups(role, stores, cache)
                if groups != last:
                    send(groups)
                    last = groups
                await self._dirty.wait()
                await anyio.sleep(self.hub.tuning.debounce)
        finally:
            for _, w in subs:
                self.hub.unsubscribe(w, self._poke, self._watch_failed)
