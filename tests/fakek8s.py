"""A fake Kubernetes API server that speaks the real wire format, on 127.0.0.1, in threads.

What it serves, as kube-apiserver does (JSON only):

- ``GET /version``;
- lists: ``GET /api/v1/[namespaces/<ns>/]<resource>`` and ``/apis/<group>/<version>/...``, with
  ``labelSelector``, ``fieldSelector``, ``limit`` and ``continue`` (tokens expire on :meth:`compact`,
  answering 410 ``Expired``), ``kind: <Kind>List`` and ``metadata.resourceVersion``; items without
  ``kind``/``apiVersion``;
- watches (``watch=1|true``): a chunked stream of JSON lines ``{"type": ..., "object": ...}``
  from ``resourceVersion`` on, ``BOOKMARK`` events every ``bookmark_interval`` when asked with
  ``allowWatchBookmarks``, ended after ``timeoutSeconds``; a resourceVersion older than the last
  :meth:`compact` gets an ``ERROR`` event with code 410 (``gone_mode="event"``, as the real server)
  or an HTTP 410 (``"status"``);
- faults: a bearer ``token`` (401 without it), :attr:`forbidden` ``(verb, resource)`` pairs (403
  with the real message), :meth:`drop_watches` (cuts every open stream mid-chunk), ``silent``
  (watch streams that send headers and then nothing), ``garbage`` (the next N watch streams start
  with a line that is not JSON), ``down`` (every request gets a reset connection);
  :meth:`end_watches` ends every open stream cleanly (its last chunk), as the real server does at
  a watch's timeout, so that clients watch again from their last resourceVersion.

:attr:`gone` lists the resource of every 410 sent (as a status or as an ERROR event).

:func:`kubeadm_objects` builds what a kubeadm cluster with N control-plane nodes holds.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]

# resource -> (kind, apiVersion, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "endpoints": ("Endpoints", "v1", True),
    "pods": ("Pod", "v1", True),
    "services": ("Service", "v1", True),
    "nodes": ("Node", "v1", False),
    "namespaces": ("Namespace", "v1", False),
    "endpointslices": ("EndpointSlice", "discovery.k8s.io/v1", True),
    "ingresses": ("Ingress", "networking.k8s.io/v1", True),
}
_PATH = re.compile(r"^/(?:api/v1|apis/([^/]+)/([^/]+))(?:/namespaces/([^/]+))?/([a-z]+)$")


def _status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _field(obj: Obj, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _label_match(labels: dict[str, str], selector: str) -> bool:
    for req in re.split(r",(?![^(]*\))", selector):
        req = req.strip()
        if not req:
            continue
        m = re.match(r"^([^\s!=]+)\s+(in|notin)\s*\(([^)]*)\)$", req)
        if m:
            values = {v.strip() for v in m.group(3).split(",")}
            inside = m.group(1) in labels and labels[m.group(1)] in values
            if inside != (m.group(2) == "in"):
                return False
            continue
        m = re.match(r"^([^!=]+?)\s*(==|=|!=)\s*(.*)$", req)
        if m:
            k, op, v = m.group(1).strip(), m.group(2), m.group(3).strip()
            if (labels.get(k) == v) != (op != "!="):
                return False
            continue
        if req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _field_match(obj: Obj, selector: str) -> bool:
    for req in selector.split(","):
        m = re.match(r"^([^!=]+?)\s*(==|=|!=)\s*(.*)$", req.strip())
        if not m:
            continue
        if (_field(obj, m.group(1).strip()) == m.group(3).strip()) != (m.group(2) != "!="):
            return False
    return True


class FakeK8s:
    """The API server; ``with FakeK8s() as api:`` serves at ``api.url`` until the block ends."""

    def __init__(self, *, token: str | None = None, bookmark_interval: float | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        self.token = token
        self.tls = tls  # (certificate, key) files: serve HTTPS
        self.bookmark_interval = bookmark_interval
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects: dict[str, dict[str, Obj]] = {r: {} for r in KINDS}
        self.history: list[tuple[int, str, str, Obj]] = []  # (rv, resource, type, object)
        self.compacted = 0  # watches from an older resourceVersion, and older continue tokens, get 410
        self.forbidden: set[tuple[str, str]] = set()
        self.gone_mode = "event"
        self.silent = False
        self.garbage = 0
        self.down = False
        self.epoch = 0  # bumped by drop_watches: open streams stop
        self.end_epoch = 0  # bumped by end_watches: open streams end cleanly
        self.gone: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.open_watches = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"

    def _key(self, resource: str, obj: Obj) -> str:
        meta = obj["metadata"]
        return f"{meta.get('namespace', '')}/{meta['name']}" if KINDS[resource][2] else meta["name"]

    def put(self, resource: str, obj: Obj) -> Obj:
        """Create or replace an object (ADDED or MODIFIED); returns the stored copy."""
        with self.cond:
            obj = copy.deepcopy(obj)
            kind, api_version, _ = KINDS[resource]
            self.rv += 1
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.rv)
            meta.setdefault("uid", f"uid-{resource}-{meta.get('namespace', '')}-{meta['name']}")
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            key = self._key(resource, obj)
            kind_of_event = "MODIFIED" if key in self.objects[resource] else "ADDED"
            self.objects[resource][key] = obj
            self.history.append((self.rv, resource, kind_of_event, {"kind": kind, "apiVersion": api_version, **obj}))
            self.cond.notify_all()
            return obj

    def delete(self, resource: str, name: str, namespace: str = "") -> None:
        with self.cond:
            key = f"{namespace}/{name}" if KINDS[resource][2] else name
            obj = self.objects[resource].pop(key)
            kind, api_version, _ = KINDS[resource]
            self.rv += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
            self.history.append((self.rv, resource, "DELETED", {"kind": kind, "apiVersion": api_version, **obj}))
            self.cond.notify_all()

    def load(self, objects: dict[str, list[Obj]]) -> None:
        for resource, objs in objects.items():
            for obj in objs:
                self.put(resource, obj)

    def compact(self) -> None:
        """Forget the history: watches from an older resourceVersion get 410 Gone."""
        with self.cond:
            self.compacted = self.rv + 1
            self.rv += 1
            self.history.clear()
            self.cond.notify_all()

    def drop_watches(self) -> None:
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()

    def end_watches(self) -> None:
        with self.cond:
            self.end_epoch += 1
            self.cond.notify_all()

    def count(self, resource: str, *, watch: bool) -> int:
        """How many list (or watch) requests for ``resource`` were made."""
        return sum(1 for path, q in self.requests if path.endswith("/" + resource) and ("watch" in q) == watch)

    # -- serving -------------------------------------------------------------------------------

    def start(self) -> FakeK8s:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.drop_watches()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeK8s:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _send_json(self, h: BaseHTTPRequestHandler, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self.cond:
            self.requests.append((parts.path, q))
        if self.down:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            h.close_connection = True
            h.connection.close()
            return
        if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
            self._send_json(h, 401, _status(401, "Unauthorized", "Unauthorized"))
            return
        if parts.path == "/version":
            self._send_json(h, 200, {"major": "1", "minor": "28", "gitVersion": "v1.28.3", "platform": "linux/amd64"})
            return
        m = _PATH.match(parts.path)
        if not m or m.group(4) not in KINDS:
            self._send_json(h, 404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        resource, namespace = m.group(4), m.group(3) or ""
        watch = q.get("watch") in ("1", "true")
        verb = "watch" if watch else "list"
        if (verb, resource) in self.forbidden:
            group = m.group(1) or ""
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            self._send_json(h, 403, _status(403, "Forbidden", f'{resource} is forbidden: User '
                                            f'"system:serviceaccount:monitoring:relay" cannot {verb} resource '
                                            f'"{resource}" in API group "{group}" {scope}'))
            return
        if watch:
            self._watch(h, resource, namespace, q)
        else:
            self._list(h, resource, namespace, q)

    def _matches(self, resource: str, obj: Obj, namespace: str, q: dict[str, str]) -> bool:
        meta = obj.get("metadata", {})
        if namespace and meta.get("namespace") != namespace:
            return False
        if q.get("labelSelector") and not _label_match(meta.get("labels") or {}, q["labelSelector"]):
            return False
        return not (q.get("fieldSelector") and not _field_match(obj, q["fieldSelector"]))

    def _list(self, h: BaseHTTPRequestHandler, resource: str, namespace: str, q: dict[str, str]) -> None:
        kind, api_version, _ = KINDS[resource]
        start = ""
        with self.cond:
            if q.get("continue"):
                token = json.loads(base64.b64decode(q["continue"]))
                if token["rv"] < self.compacted:
                    body = _status(410, "Expired", "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the continue parameter.")
                    self._send_json(h, 410, body)
                    return
                start, rv = token["start"], token["rv"]
            else:
                rv = self.rv
            keys = sorted(k for k, o in self.objects[resource].items()
                          if k > start and self._matches(resource, o, namespace, q))
            limit = int(q.get("limit") or 0)
            page = keys[:limit] if limit else keys
            items = [copy.deepcopy(self.objects[resource][k]) for k in page]
            meta: Obj = {"resourceVersion": str(rv)}
            if limit and len(keys) > limit:
                meta["continue"] = base64.b64encode(json.dumps({"rv": rv, "start": page[-1]}).encode()).decode()
                meta["remainingItemCount"] = len(keys) - limit
        self._send_json(h, 200, {"kind": kind + "List", "apiVersion": api_version, "metadata": meta, "items": items})

    def _watch(self, h: BaseHTTPRequestHandler, resource: str, namespace: str, q: dict[str, str]) -> None:
        kind, api_version, _ = KINDS[resource]
        rv_text = q.get("resourceVersion", "")
        rv = int(rv_text) if rv_text.isdigit() else 0
        if rv and rv < self.compacted and self.gone_mode == "status":
            with self.cond:
                self.gone.append(resource)
            self._send_json(h, 410, _status(410, "Expired", f"too old resource version: {rv} ({self.compacted})"))
            return
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def chunk(data: bytes) -> None:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        def line(event: Obj) -> None:
            chunk(json.dumps(event).encode() + b"\n")

        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") == "true" and self.bookmark_interval
        next_bookmark = time.monotonic() + (self.bookmark_interval or 0)
        with self.cond:
            epoch, end_epoch = self.epoch, self.end_epoch
            ended = False
            self.open_watches += 1
            garbage = self.garbage > 0
            if garbage:
                self.garbage -= 1
            silent = self.silent  # a silent stream stays silent, past its timeout too
        try:
            if garbage:
                chunk(b'{"type": "ADDED", "object": {"metadata": \n')
            if rv and rv < self.compacted:
                with self.cond:
                    self.gone.append(resource)
                line({"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: {rv} "
                                                          f"({self.compacted})")})
                chunk(b"")
                return
            if not rv:  # resourceVersion 0 or none: every current object as ADDED, then changes
                with self.cond:
                    current = [o for o in self.objects[resource].values() if self._matches(resource, o, namespace, q)]
                    rv = self.rv
                for o in current:
                    line({"type": "ADDED", "object": {"kind": kind, "apiVersion": api_version, **o}})
            while True:
                with self.cond:
                    while True:
                        if self.epoch != epoch:
                            # Dropped: cut the connection mid-stream (no closing chunk).
                            h.close_connection = True
                            h.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if self.end_epoch != end_epoch:
                            ended = True  # as at its timeout, below
                            break
                        now = time.monotonic()
                        if now >= deadline and not silent:
                            break
                        # history is in resourceVersion order: the events after rv, found by bisection
                        pending = [] if silent else self.history[bisect.bisect_right(self.history, rv,
                                                                                    key=lambda e: e[0]):]
                        if pending or (bookmarks and now >= next_bookmark and not silent):
                            break
                        self.cond.wait(0.1)
                    current_rv = self.rv
                if ended or (time.monotonic() >= deadline and not silent):
                    chunk(b"")
                    return
                for erv, res, typ, obj in pending:
                    if res == resource and self._matches(resource, obj, namespace, q):
                        line({"type": typ, "object": obj})
                    rv = max(rv, erv)
                if bookmarks and time.monotonic() >= next_bookmark and not silent:
                    next_bookmark = time.monotonic() + (self.bookmark_interval or 0)
                    line({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                                                         "metadata": {"resourceVersion": str(current_rv)}}})
        except OSError:
            return
        finally:
            with self.cond:
                self.open_watches -= 1


# -- a kubeadm cluster ---------------------------------------------------------------------------


def _node(name: str, ip: str) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "node-role.kubernetes.io/control-plane": "",
                                              "node.kubernetes.io/exclude-from-external-load-balancers": ""},
                     "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                                     "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}},
    }


def _etcd_pod(node: str, ip: str) -> Obj:
    return {
        "metadata": {
            "name": f"etcd-{node}", "namespace": "kube-system",
            "labels": {"component": "etcd", "tier": "control-plane"},
            "annotations": {"kubeadm.kubernetes.io/etcd.advertise-client-urls": f"https://{ip}:2379",
                            "kubernetes.io/config.source": "file", "kubernetes.io/config.hash": f"hash-{node}"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": f"uid-node-{node}",
                                 "controller": True}],
        },
        "spec": {"nodeName": node, "hostNetwork": True, "priorityClassName": "system-node-critical",
                 "containers": [{"name": "etcd", "image": "registry.k8s.io/etcd:3.5.9-0",
                                 "command": ["etcd", f"--advertise-client-urls=https://{ip}:2379",
                                             "--listen-metrics-urls=http://0.0.0.0:2381"]}]},
        "status": {"phase": "Running", "hostIP": ip, "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
                                  {"type": "ContainersReady", "status": "True"}],
                   "containerStatuses": [{"name": "etcd", "ready": True,
                                          "containerID": f"containerd://{node}0123456789abcdef"}]},
    }


def _coredns_pod(i: int, node: str, node_ip: str, ip: str) -> Obj:
    ports = [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
             {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}]
    return {
        "metadata": {"name": f"coredns-5d78c9869d-{i}", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "pod-template-hash": "5d78c9869d"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "coredns-5d78c9869d",
                                          "uid": "uid-rs", "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"nodeName": node, "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.10.1",
                                                   "ports": ports}]},
        "status": {"phase": "Running", "hostIP": node_ip, "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "coredns", "containerID": f"containerd://coredns{i}"}]},
    }


def etcd_endpoints(nodes: list[tuple[str, str]], port: int = 2381, not_ready: tuple[str, ...] = ()) -> Obj:
    def addr(n: str, ip: str) -> Obj:
        return {"ip": ip, "nodeName": n, "targetRef": {"kind": "Pod", "namespace": "kube-system",
                                                       "name": f"etcd-{n}", "uid": f"uid-etcd-{n}"}}
    subset: Obj = {"addresses": [addr(n, ip) for n, ip in nodes if n not in not_ready],
                   "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
    if not_ready:
        subset["notReadyAddresses"] = [addr(n, ip) for n, ip in nodes if n in not_ready]
    return {"metadata": {"name": "etcd", "namespace": "kube-system",
                         "labels": {"component": "etcd", "service.kubernetes.io/headless": ""}},
            "subsets": [subset]}


def etcd_endpointslice(nodes: list[tuple[str, str]], port: int = 2381) -> Obj:
    return {
        "metadata": {"name": "etcd-x7k2p", "namespace": "kube-system", "generateName": "etcd-",
                     "labels": {"component": "etcd", "kubernetes.io/service-name": "etcd",
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                                "service.kubernetes.io/headless": ""},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "etcd", "uid": "uid-svc-etcd",
                                          "controller": True, "blockOwnerDeletion": True}]},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                       "nodeName": n, "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": f"etcd-{n}",
                                                    "uid": f"uid-etcd-{n}"}} for n, ip in nodes],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def kubeadm_objects(nodes: list[tuple[str, str]], *, etcd_port: int = 2381) -> dict[str, list[Obj]]:
    """A kubeadm cluster: control-plane ``nodes`` [(name, ip)], their static etcd pods, the headless
    ``kube-system/etcd`` Service (port ``http``) with its Endpoints and EndpointSlice, CoreDNS (whose
    pods have a container port the Service does not list), ``default/kubernetes`` and an Ingress."""
    n0, ip0 = nodes[0]
    dns_ips = ["10.244.0.2", "10.244.0.3"]
    dns_pods = [_coredns_pod(i, n0, ip0, ip) for i, ip in enumerate(dns_ips)]
    return {
        "namespaces": [{"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}
                       for ns in ("default", "kube-system")],
        "nodes": [_node(n, ip) for n, ip in nodes],
        "pods": [_etcd_pod(n, ip) for n, ip in nodes] + dns_pods,
        "services": [
            {"metadata": {"name": "etcd", "namespace": "kube-system", "labels": {"component": "etcd"},
                          "annotations": {"prometheus.io/port": str(etcd_port)}},
             "spec": {"clusterIP": "None", "clusterIPs": ["None"], "type": "ClusterIP", "selector": {"component": "etcd"},
                      "ports": [{"name": "http", "port": etcd_port, "protocol": "TCP", "targetPort": etcd_port}]}},
            {"metadata": {"name": "kube-dns", "namespace": "kube-system",
                          "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
                          "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
             "spec": {"clusterIP": "10.96.0.10", "type": "ClusterIP", "selector": {"k8s-app": "kube-dns"},
                      "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
            {"metadata": {"name": "kubernetes", "namespace": "default",
                          "labels": {"component": "apiserver", "provider": "kubernetes"}},
             "spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP",
                      "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}},
        ],
        "endpoints": [
            etcd_endpoints(nodes, etcd_port),
            {"metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
             "subsets": [{"notReadyAddresses": [{"ip": ip, "nodeName": n0, "targetRef": {
                 "kind": "Pod", "namespace": "kube-system", "name": p["metadata"]["name"]}}
                 for ip, p in zip(dns_ips, dns_pods, strict=True)],
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}]},
            {"metadata": {"name": "kubernetes", "namespace": "default",
                          "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
             "subsets": [{"addresses": [{"ip": ip} for _, ip in nodes],
                          "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]},
        ],
        "endpointslices": [etcd_endpointslice(nodes, etcd_port)],
        "ingresses": [
            {"metadata": {"name": "grafana", "namespace": "default", "labels": {"app": "grafana"},
                          "annotations": {"kubernetes.io/ingress.class": "nginx"}},
             "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["*.example.com"]}],
                      "rules": [{"host": "grafana.example.com", "http": {"paths": [
                          {"path": "/", "pathType": "Prefix", "backend": {}}, {"path": "/api", "pathType": "Prefix",
                                                                              "backend": {}}]}},
                                {"host": "grafana.internal"}]}},
        ],
    }


@contextmanager
def serving(nodes: list[tuple[str, str]], **kwargs: Any) -> Iterator[FakeK8s]:
    with FakeK8s(**kwargs) as api:
        api.load(kubeadm_objects(nodes))
        yield api
