"""kubernetes_sd_configs: config, the fake API server, each role's labels, list+watch, the oracles.

The oracles are ``/work/shared/bin/prometheus-k8s-sd`` (Prometheus v2.42.0's own Kubernetes
discovery) and Debian's ``vmagent``, each pointed at the same fake API server (tests/fakek8s.py) as
the relay; vmagent's known differences from Prometheus are named in ``VMAGENT_ALLOWANCES``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from relay._exceptions import ConfigError
from relay.config import parse_config

from .conftest import missing_service
from .fakek8s import FakeK8s, kubeadm_objects

NODES = [("cp-1", "127.0.13.1"), ("cp-2", "127.0.13.2"), ("cp-3", "127.0.13.3")]

# The central-collector config of issue 13 (a kubeadm cluster's etcd members behind kube-system/etcd).
ISSUE_JOB = """\
- job_name: "etcd"
  kubernetes_sd_configs:
    - role: endpoints{extra}
  scheme: http
  relabel_configs:
    - source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_service_name, __meta_kubernetes_endpoint_port_name]
      action: keep
      regex: kube-system;etcd;http
"""


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- config --------------------------------------------------------------------------------------


def test_issue_config_loads() -> None:
    cfg = parse_config("scrape_configs:\n" + "\n".join("  " + line for line in ISSUE_JOB.format(extra="").splitlines()))
    (k,) = cfg.scrape_configs[0].kubernetes_sd_configs
    assert k.role == "endpoints" and k.api_server is None and k.kubeconfig_file is None and k.namespaces == ()


def test_full_kubernetes_sd_config(tmp_path: Path) -> None:
    cfg = parse_config(
        "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n"
        "      - role: endpointslice\n        api_server: https://10.0.0.1:6443/\n"
        "        namespaces: {names: [kube-system, monitoring]}\n"
        "        selectors:\n          - {role: endpointslice, label: 'component=etcd,tier in (control-plane)'}\n"
        "          - {role: pod, field: 'spec.nodeName=cp-1'}\n"
        "        attach_metadata: {node: true, namespace: true}\n"
        "        tls_config: {ca_file: ca.crt, insecure_skip_verify: false}\n"
        "        authorization: {credentials_file: token}\n"
        "      - role: node\n        kubeconfig_file: kube/config\n",
        base=tmp_path,
    )
    a, b = cfg.scrape_configs[0].kubernetes_sd_configs
    assert a.api_server == "https://10.0.0.1:6443" and a.namespaces == ("kube-system", "monitoring")
    assert a.selector("endpointslice") == ("component=etcd,tier in (control-plane)", "")
    assert a.selector("pod") == ("", "spec.nodeName=cp-1") and a.selector("service") == ("", "")
    assert a.attach_node and a.attach_namespace
    assert a.http.tls_config.ca_file == str(tmp_path / "ca.crt")
    assert a.http.authorization is not None and a.http.authorization.credentials_file == str(tmp_path / "token")
    assert b.role == "node" and b.kubeconfig_file == str(tmp_path / "kube/config")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("{}", "scrape_configs[0].kubernetes_sd_configs[0].role: is required"),
        ("{role: pods}", "scrape_configs[0].kubernetes_sd_configs[0].role: 'pods' is not one of"),
        ("{role: pod, apiserver: x}", "scrape_configs[0].kubernetes_sd_configs[0].apiserver: unknown key"),
        ("{role: pod, api_server: 'ftp://x'}", "scrape_configs[0].kubernetes_sd_configs[0].api_server:"),
        ("{role: pod, api_server: 'http://x', kubeconfig_file: k}", "scrape_configs[0].kubernetes_sd_configs[0]: cannot"),
        ("{role: pod, tls_config: {insecure_skip_verify: true}}",
         "scrape_configs[0].kubernetes_sd_configs[0]: tls_config, basic_auth and authorization need"),
        ("{role: pod, api_server: 'http://x', namespaces: {own_namespace: true}}",
         "scrape_configs[0].kubernetes_sd_configs[0].namespaces.own_namespace:"),
        ("{role: pod, namespaces: {name: [a]}}", "scrape_configs[0].kubernetes_sd_configs[0].namespaces.name: unknown key"),
        ("{role: pod, selectors: [{role: node, label: a=b}]}",
         "scrape_configs[0].kubernetes_sd_configs[0].selectors[0].role: pod role supports only pod selectors"),
        ("{role: endpoints, selectors: [{role: pod}, {role: pod}]}",
         "scrape_configs[0].kubernetes_sd_configs[0].selectors[1].role: duplicated selector role: pod"),
        ("{role: pod, selectors: [{role: pod, label: 'a=(b'}]}",
         "scrape_configs[0].kubernetes_sd_configs[0].selectors[0].label:"),
        ("{role: pod, attach_metadata: {nodes: true}}",
         "scrape_configs[0].kubernetes_sd_configs[0].attach_metadata.nodes: unknown key"),
    ],
)
def test_bad_kubernetes_sd_config_names_the_key(body: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - {body}\n")
    assert str(info.value).startswith(where), str(info.value)


# -- the fake API server -------------------------------------------------------------------------


def test_fake_lists_with_paging_and_selectors() -> None:
    with FakeK8s() as api:
        api.load(kubeadm_objects(NODES))
        status, page = _get(f"{api.url}/api/v1/pods?limit=2")
        assert status == 200 and page["kind"] == "PodList" and len(page["items"]) == 2
        assert page["metadata"]["continue"] and page["metadata"]["remainingItemCount"] == 3
        status, rest = _get(f"{api.url}/api/v1/pods?limit=10&continue={page['metadata']['continue']}")
        names = [p["metadata"]["name"] for p in page["items"] + rest["items"]]
        assert len(set(names)) == 5 and "continue" not in rest["metadata"]
        _, etcd = _get(f"{api.url}/api/v1/namespaces/kube-system/pods?labelSelector=component%3Detcd")
        assert sorted(p["metadata"]["name"] for p in etcd["items"]) == ["etcd-cp-1", "etcd-cp-2", "etcd-cp-3"]
        _, one = _get(f"{api.url}/api/v1/pods?fieldSelector=spec.nodeName%3Dcp-2")
        assert [p["metadata"]["name"] for p in one["items"]] == ["etcd-cp-2"]
        api.compact()
        status, gone = _get(f"{api.url}/api/v1/pods?limit=2&continue={page['metadata']['continue']}")
        assert status == 410 and gone["reason"] == "Expired"
        api.forbidden.add(("list", "nodes"))
        status, denied = _get(f"{api.url}/api/v1/nodes")
        assert status == 403 and 'cannot list resource "nodes"' in denied["message"]


def test_fake_watch_stream_and_gone() -> None:
    with FakeK8s() as api:
        api.load(kubeadm_objects(NODES))
        _, listed = _get(f"{api.url}/api/v1/nodes")
        rv = listed["metadata"]["resourceVersion"]
        api.put("nodes", {"metadata": {"name": "cp-4"}, "status": {}})
        api.delete("nodes", "cp-1")
        with urllib.request.urlopen(f"{api.url}/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1") as r:
            assert r.headers["Transfer-Encoding"] == "chunked"
            events = [json.loads(line) for line in r.read().splitlines()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "cp-4"), ("DELETED", "cp-1")]
        assert events[0]["object"]["kind"] == "Node"
        api.compact()
        with urllib.request.urlopen(f"{api.url}/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1") as r:
            (event,) = [json.loads(line) for line in r.read().splitlines()]
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
        api.token = "s3cret"
        status, body = _get(f"{api.url}/api/v1/nodes")
        assert status == 401 and body["kind"] == "Status"


# -- each role's labels --------------------------------------------------------------------------

_KIND_OF = {"endpoints": "endpoints", "endpointslice": "endpointslices", "pod": "pods", "service": "services",
            "node": "nodes", "ingress": "ingresses"}


def _stores(role: str, objects: dict[str, list[Any]] | None = None, **attach: bool) -> Any:
    from relay.discovery.kubernetes import Stores

    objects = objects or kubeadm_objects(NODES)

    def keyed(resource: str) -> dict[str, Any]:
        out = {}
        for o in objects[resource]:
            ns = o["metadata"].get("namespace", "")
            out[f"{ns}/{o['metadata']['name']}" if ns else o["metadata"]["name"]] = o
        return out

    return Stores(main=keyed(_KIND_OF[role]), services=keyed("services"), pods=keyed("pods"), nodes=keyed("nodes"),
                  namespaces=keyed("namespaces"), **attach)


def _targets(role: str, objects: dict[str, list[Any]] | None = None, **attach: bool) -> dict[str, dict[str, str]]:
    """address -> labels, for targets with a unique address; ``address|port_name`` otherwise."""
    from relay.discovery.kubernetes import build_groups

    out: dict[str, dict[str, str]] = {}
    for g in build_groups(role, _stores(role, objects, **attach)):
        (addr,) = g.targets
        labels = dict(g.labels)
        key = addr
        for name in ("endpoint_port_name", "endpointslice_port_name", "pod_container_port_name", "service_port_name",
                     "ingress_path", "pod_container_name"):
            if f"__meta_kubernetes_{name}" in labels:
                key += "|" + labels[f"__meta_kubernetes_{name}"]
                break
        assert key not in out
        out[key] = labels
    return out


def test_endpoints_role_joins_service_and_pod() -> None:
    t = _targets("endpoints")
    etcd = t["127.0.13.2:2381|http"]
    assert etcd == {
        "__meta_kubernetes_namespace": "kube-system",
        "__meta_kubernetes_endpoints_name": "etcd",
        "__meta_kubernetes_endpoints_label_component": "etcd",
        "__meta_kubernetes_endpoints_labelpresent_component": "true",
        "__meta_kubernetes_endpoints_labelpresent_service_kubernetes_io_headless": "true",
        "__meta_kubernetes_service_name": "etcd",
        "__meta_kubernetes_service_label_component": "etcd",
        "__meta_kubernetes_service_labelpresent_component": "true",
        "__meta_kubernetes_service_annotation_prometheus_io_port": "2381",
        "__meta_kubernetes_service_annotationpresent_prometheus_io_port": "true",
        "__meta_kubernetes_endpoint_port_name": "http",
        "__meta_kubernetes_endpoint_port_protocol": "TCP",
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_endpoint_node_name": "cp-2",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": "etcd-cp-2",
        "__meta_kubernetes_pod_name": "etcd-cp-2",
        "__meta_kubernetes_pod_ip": "127.0.13.2",
        "__meta_kubernetes_pod_host_ip": "127.0.13.2",
        "__meta_kubernetes_pod_node_name": "cp-2",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_controller_kind": "Node",
        "__meta_kubernetes_pod_controller_name": "cp-2",
        "__meta_kubernetes_pod_label_component": "etcd",
        "__meta_kubernetes_pod_labelpresent_component": "true",
        "__meta_kubernetes_pod_label_tier": "control-plane",
        "__meta_kubernetes_pod_labelpresent_tier": "true",
        "__meta_kubernetes_pod_annotation_kubeadm_kubernetes_io_etcd_advertise_client_urls": "https://127.0.13.2:2379",
        "__meta_kubernetes_pod_annotationpresent_kubeadm_kubernetes_io_etcd_advertise_client_urls": "true",
        "__meta_kubernetes_pod_annotation_kubernetes_io_config_hash": "hash-cp-2",
        "__meta_kubernetes_pod_annotationpresent_kubernetes_io_config_hash": "true",
        "__meta_kubernetes_pod_annotation_kubernetes_io_config_source": "file",
        "__meta_kubernetes_pod_annotationpresent_kubernetes_io_config_source": "true",
    }
    # CoreDNS: not-ready addresses, container port labels, and the extra target for the container
    # port (metrics 9153) that the Service does not list.
    dns = t["10.244.0.2:53|dns-tcp"]
    assert dns["__meta_kubernetes_endpoint_ready"] == "false"
    assert dns["__meta_kubernetes_pod_container_port_name"] == "dns"  # the first container port 53, as Prometheus
    assert dns["__meta_kubernetes_pod_container_port_protocol"] == "TCP"  # ... with the endpoint port's protocol
    extra = t["10.244.0.2:9153|metrics"]
    assert extra["__meta_kubernetes_pod_container_port_number"] == "9153"
    assert "__meta_kubernetes_endpoint_port_name" not in extra and extra["__meta_kubernetes_endpoints_name"] == "kube-dns"
    # An address without targetRef (the apiserver's own endpoints) has no pod labels.
    api = t["127.0.13.1:6443|https"]
    assert not any(k.startswith("__meta_kubernetes_pod_") for k in api)
    assert len(t) == 3 + 4 + 2 + 3


def test_endpoints_role_attach_node_metadata() -> None:
    t = _targets("endpoints", attach_node=True, attach_namespace=True)
    etcd = t["127.0.13.1:2381|http"]
    assert etcd["__meta_kubernetes_node_name"] == "cp-1"
    assert etcd["__meta_kubernetes_node_labelpresent_node_role_kubernetes_io_control_plane"] == "true"
    assert "__meta_kubernetes_node_annotation_node_alpha_kubernetes_io_ttl" not in etcd  # labels only, as Prometheus
    assert etcd["__meta_kubernetes_namespace_label_kubernetes_io_metadata_name"] == "kube-system"
    assert "__meta_kubernetes_node_name" not in t["127.0.13.1:6443|https"]  # no nodeName on that address


def test_endpointslice_role() -> None:
    t = _targets("endpointslice")
    assert set(t) == {f"127.0.13.{i}:2381|http" for i in (1, 2, 3)}
    e = t["127.0.13.3:2381|http"]
    for k, v in {
        "__meta_kubernetes_endpointslice_name": "etcd-x7k2p",
        "__meta_kubernetes_endpointslice_address_type": "IPv4",
        "__meta_kubernetes_endpointslice_port": "2381",
        "__meta_kubernetes_endpointslice_port_protocol": "TCP",
        "__meta_kubernetes_endpointslice_endpoint_conditions_ready": "true",
        "__meta_kubernetes_endpointslice_endpoint_conditions_serving": "true",
        "__meta_kubernetes_endpointslice_endpoint_conditions_terminating": "false",
        "__meta_kubernetes_endpointslice_address_target_kind": "Pod",
        "__meta_kubernetes_endpointslice_address_target_name": "etcd-cp-3",
        "__meta_kubernetes_service_name": "etcd",
        "__meta_kubernetes_pod_name": "etcd-cp-3",
    }.items():
        assert e[k] == v, k
    assert "__meta_kubernetes_endpointslice_port_app_protocol" not in e


def test_pod_role() -> None:
    t = _targets("pod")
    etcd = t["127.0.13.1|etcd"]  # no container ports: the pod IP alone
    assert etcd["__meta_kubernetes_pod_container_name"] == "etcd"
    assert etcd["__meta_kubernetes_pod_container_id"] == "containerd://cp-10123456789abcdef"
    assert etcd["__meta_kubernetes_pod_container_init"] == "false"
    assert etcd["__meta_kubernetes_namespace"] == "kube-system"
    assert etcd["__meta_kubernetes_pod_container_image"] == "registry.k8s.io/etcd:3.5.9-0"
    metrics = t["10.244.0.3:9153|metrics"]
    assert metrics["__meta_kubernetes_pod_container_port_protocol"] == "TCP"
    assert metrics["__meta_kubernetes_pod_ready"] == "false" and metrics["__meta_kubernetes_pod_controller_kind"] == "ReplicaSet"
    assert t["10.244.0.3:53|dns"]["__meta_kubernetes_pod_container_port_protocol"] == "UDP"
    objects = kubeadm_objects(NODES)
    objects["pods"][0]["status"].pop("podIP")  # a pod without an IP has no targets
    objects["pods"][1]["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    t = _targets("pod", objects)
    assert "127.0.13.1|etcd" not in t and t["127.0.13.2|init"]["__meta_kubernetes_pod_container_name"] == "init"
    inits = [v for v in t.values() if v.get("__meta_kubernetes_pod_container_init") == "true"]
    assert len(inits) == 1 and inits[0]["__meta_kubernetes_pod_container_name"] == "init"


def test_service_node_and_ingress_roles() -> None:
    svc = _targets("service")
    etcd = svc["etcd.kube-system.svc:2381|http"]
    assert etcd["__meta_kubernetes_service_cluster_ip"] == "None"
    assert etcd["__meta_kubernetes_service_type"] == "ClusterIP" and etcd["__meta_kubernetes_service_port_number"] == "2381"
    nodes = _targets("node")
    n = nodes["127.0.13.2:10250"]
    assert n["instance"] == "cp-2" and n["__meta_kubernetes_node_address_InternalIP"] == "127.0.13.2"
    assert n["__meta_kubernetes_node_address_Hostname"] == "cp-2" and n["__meta_kubernetes_node_name"] == "cp-2"
    assert n["__meta_kubernetes_node_annotationpresent_node_alpha_kubernetes_io_ttl"] == "true"
    ing = _targets("ingress")
    assert ing["grafana.example.com|/api"]["__meta_kubernetes_ingress_scheme"] == "https"  # *.example.com TLS
    assert ing["grafana.internal|/"]["__meta_kubernetes_ingress_scheme"] == "http"
    assert ing["grafana.internal|/"]["__meta_kubernetes_ingress_class_name"] == "nginx"


# -- list and watch ------------------------------------------------------------------------------

FAST = dict(page_size=2, watch_timeout=(30, 30), idle_margin=1.0, backoff_min=0.05, backoff_max=0.3, debounce=0.05,
            linger=0.2, request_timeout=5.0)


class _Run:
    """Providers of ``configs`` on one hub, recording what each one sends."""

    def __init__(self, configs: list[Any], **tuning: Any) -> None:
        from relay.discovery.kubernetes import KubernetesHub, Tuning
        from relay.http.client import ClientPool

        self.pool = ClientPool()
        self.hub = KubernetesHub(self.pool, Tuning(**{**FAST, **tuning}))
        self.configs = configs
        self.sent: list[list[list[Any]]] = [[] for _ in configs]

    def addresses(self, i: int = 0) -> set[str]:
        return {g.targets[0] for g in self.sent[i][-1]} if self.sent[i] else set()

    def labels(self, address: str, i: int = 0) -> dict[str, str]:
        (g,) = [g for g in self.sent[i][-1] if g.targets[0] == address]
        return dict(g.labels)

    async def until(self, check: Any, timeout: float = 10.0) -> None:
        import anyio

        with anyio.fail_after(timeout):
            while not check():
                await anyio.sleep(0.02)

    def __call__(self, body: Any) -> Any:
        import anyio

        from relay.discovery.kubernetes import KubernetesSDProvider

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                self.hub.tg = tg
                for i, cfg in enumerate(self.configs):
                    provider = KubernetesSDProvider(cfg, f"job{i}", self.hub)
                    tg.start_soon(provider.run, self.sent[i].append)
                try:
                    await body(self)
                finally:
                    tg.cancel_scope.cancel()
            await self.pool.aclose()

        return main


def _cfg(api: FakeK8s | str, role: str = "endpoints", **kw: Any) -> Any:
    from relay.config import KubernetesSDConfig

    return KubernetesSDConfig(role=role, api_server=api if isinstance(api, str) else api.url, **kw)


ETCD = {f"127.0.13.{i}:2381" for i in (1, 2, 3)}


@pytest.fixture
def api() -> Any:
    with FakeK8s() as fake:
        fake.load(kubeadm_objects(NODES))
        yield fake


@pytest.mark.anyio
async def test_paged_list_then_watch_events(api: FakeK8s) -> None:
    from .fakek8s import _etcd_pod, etcd_endpoints

    run = _Run([_cfg(api, namespaces=("kube-system",))])

    async def body(r: _Run) -> None:
        await r.until(lambda: r.addresses() >= ETCD)
        pages = [q for p, q in api.requests if p.endswith("/pods") and "watch" not in q]
        assert len(pages) == 3 and "continue" in pages[1]  # 5 pods, 2 a page
        path, watch = next((p, q) for p, q in api.requests if p.endswith("/endpoints") and "watch" in q)
        assert watch["allowWatchBookmarks"] == "true" and int(watch["resourceVersion"]) > 1000
        assert path == "/api/v1/namespaces/kube-system/endpoints"
        # A fourth member: pod first, then the endpoints (as the kubelet and the controller do).
        four = [*NODES, ("cp-4", "127.0.13.4")]
        api.put("pods", _etcd_pod("cp-4", "127.0.13.4"))
        api.put("endpoints", etcd_endpoints(four, not_ready=("cp-4",)))
        await r.until(lambda: "127.0.13.4:2381" in r.addresses())
        assert r.labels("127.0.13.4:2381")["__meta_kubernetes_endpoint_ready"] == "false"
        assert r.labels("127.0.13.4:2381")["__meta_kubernetes_pod_name"] == "etcd-cp-4"
        # A pod's labels change: the endpoints' targets follow (all groups are rebuilt).
        pod = _etcd_pod("cp-1", "127.0.13.1")
        pod["metadata"]["labels"]["version"] = "3.5.10"
        api.put("pods", pod)
        await r.until(lambda: r.labels("127.0.13.1:2381").get("__meta_kubernetes_pod_label_version") == "3.5.10")
        api.delete("endpoints", "etcd", "kube-system")
        await r.until(lambda: not (ETCD & r.addresses()))
        assert "10.244.0.2:53" in r.addresses()

    await run(body)()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["event", "status"])
async def test_gone_relists(api: FakeK8s, mode: str) -> None:
    from .fakek8s import etcd_endpoints

    api.gone_mode = mode
    run = _Run([_cfg(api)])

    async def body(r: _Run) -> None:
        await r.until(lambda: r.addresses() >= ETCD)
        lists = api.count("endpoints", watch=False)
        api.compact()
        api.drop_watches()
        api.put("endpoints", etcd_endpoints(NODES[:2]))  # made while the watch was down, history is gone
        await r.until(lambda: "127.0.13.3:2381" not in r.addresses())
        assert api.count("endpoints", watch=False) == 2 * lists  # listed once more (in 2 pages)
        assert ETCD - {"127.0.13.3:2381"} <= r.addresses()

    await run(body)()


@pytest.mark.anyio
async def test_dropped_silent_and_garbled_streams_reconnect(api: FakeK8s, caplog: pytest.LogCaptureFixture) -> None:
    from .fakek8s import etcd_endpoints

    run = _Run([_cfg(api, role="endpoints")], watch_timeout=(1, 1), idle_margin=0.5)

    async def body(r: _Run) -> None:
        await r.until(lambda: r.addresses() >= ETCD)
        watches = api.count("endpoints", watch=True)
        api.drop_watches()  # cut mid-stream
        await r.until(lambda: api.count("endpoints", watch=True) > watches)
        api.put("endpoints", etcd_endpoints(NODES[:1]))
        await r.until(lambda: r.addresses() & ETCD == {"127.0.13.1:2381"})
        # A stream that sends nothing (not even its end): dropped after watch_timeout + idle_margin.
        api.silent = True
        api.drop_watches()
        await r.until(lambda: api.open_watches >= 5)  # endpoints, services, pods: re-opened, silent
        api.silent = False
        api.put("endpoints", etcd_endpoints(NODES[:2]))
        await r.until(lambda: "127.0.13.2:2381" in r.addresses(), timeout=40)
        assert any("sent nothing" in m for m in caplog.messages)
        # A line that is not JSON: the stream is dropped and watched again from the last version.
        api.garbage = 3
        api.drop_watches()
        api.put("endpoints", etcd_endpoints(NODES))
        await r.until(lambda: r.addresses() >= ETCD)
        assert any("malformed event" in m for m in caplog.messages)
        assert api.count("endpoints", watch=False) == 2  # never listed again (one list, in 2 pages)

    await run(body)()


@pytest.mark.anyio
async def test_forbidden_names_verb_and_resource_then_recovers(api: FakeK8s, caplog: pytest.LogCaptureFixture) -> None:
    api.forbidden.add(("list", "pods"))
    run = _Run([_cfg(api)])

    async def body(r: _Run) -> None:
        await r.until(lambda: api.count("pods", watch=False) >= 4)
        assert r.sent == [[]]  # nothing until every object kind is listed (as Prometheus waits for its caches)
        errors = [m for m in caplog.messages if "403" in m]
        assert len(errors) == 1, errors  # logged once, not once per retry
        assert "RBAC does not allow list on pods cluster-wide" in errors[0]
        api.forbidden.clear()
        await r.until(lambda: r.addresses() >= ETCD)

    await run(body)()


@pytest.mark.anyio
async def test_unreachable_server_and_outage_keep_last_targets(api: FakeK8s, caplog: pytest.LogCaptureFixture) -> None:
    from relay.devtools.localenv import free_ports

    run = _Run([_cfg(api), _cfg(f"http://127.0.0.1:{free_ports(1)[0]}")])

    async def body(r: _Run) -> None:
        await r.until(lambda: r.addresses(0) >= ETCD)
        await r.until(lambda: sum("cannot list" in m for m in caplog.messages) >= 1)
        api.down = True
        api.drop_watches()
        await r.until(lambda: sum("Error" in m or "error" in m for m in caplog.messages) >= 4)
        await r.until(lambda: api.count("endpoints", watch=True) >= 4)
        assert r.addresses(0) >= ETCD  # the last good targets stay
        sent = len(r.sent[0])
        api.down = False
        await r.until(lambda: all(not w.watcher.state for w in r.hub.shared.values()
                                  if w.watcher.api.conn.server == api.url))
        assert len(r.sent[0]) == sent  # nothing changed: nothing sent
        assert r.sent[1] == []
        unreachable = [m for m in caplog.messages if "cannot list" in m and api.url not in m]
        assert len(unreachable) == 3  # endpoints, services, pods: once each, however many retries

    await run(body)()


@pytest.mark.anyio
async def test_jobs_share_one_watcher(api: FakeK8s) -> None:
    run = _Run([_cfg(api), _cfg(api), _cfg(api, role="pod")])

    async def body(r: _Run) -> None:
        await r.until(lambda: all(r.sent))
        assert r.addresses(0) == r.addresses(1)
        pages = -(-5 // FAST["page_size"])  # type: ignore[operator]
        assert api.count("pods", watch=False) == pages  # one list of pods for three jobs
        assert api.count("endpoints", watch=False) == 2  # 3 objects, 2 a page
        assert len(r.hub.shared) == 3

    await run(body)()


@pytest.mark.anyio
async def test_kubeconfig_with_rotating_token_file(api: FakeK8s, tmp_path: Path) -> None:
    from relay.config import KubernetesSDConfig

    api.token = "one"
    (tmp_path / "token").write_text("one\n")
    (tmp_path / "config").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: relay\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {api.url}\n"
        "users:\n- name: u\n  user:\n    tokenFile: token\n"
        "contexts:\n- name: other\n  context: {cluster: x, user: y}\n- name: relay\n  context: {cluster: c, user: u}\n"
    )
    run = _Run([KubernetesSDConfig(role="node", kubeconfig_file=str(tmp_path / "config"))])

    async def body(r: _Run) -> None:
        import os

        await r.until(lambda: len(r.addresses()) == 3)
        api.token = "two"
        (tmp_path / "token").write_text("two\n")
        os.utime(tmp_path / "token", (1, 1))  # a new mtime, whatever the clock's resolution
        api.put("nodes", {"metadata": {"name": "cp-9"}, "status": {"addresses": [
            {"type": "InternalIP", "address": "127.0.13.9"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}})
        api.drop_watches()
        await r.until(lambda: "127.0.13.9:10250" in r.addresses())

    await run(body)()


def test_in_cluster_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.config import KubernetesSDConfig
    from relay.discovery import kubernetes
    from relay.discovery.base import DiscoveryError

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DiscoveryError, match="KUBERNETES_SERVICE_HOST"):
        kubernetes.resolve_connection(KubernetesSDConfig(role="pod"))
    for name, text in (("token", "t"), ("ca.crt", "x"), ("namespace", "monitoring")):
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(kubernetes, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    conn = kubernetes.resolve_connection(KubernetesSDConfig(role="pod", own_namespace=True))
    assert conn.server == "https://10.96.0.1:443" and conn.namespace == "monitoring"
    assert conn.http.tls_config.ca_file == str(tmp_path / "ca.crt")
    assert conn.http.authorization is not None and conn.http.authorization.credentials_file == str(tmp_path / "token")


# -- the oracles: Prometheus v2.42's own Kubernetes discovery, and vmagent -------------------------

# ../shared beside the checkout (as CI lays it out), else the workplace's copy
ORACLE = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "bin" / "prometheus-k8s-sd",
                           Path("/work/shared/bin/prometheus-k8s-sd")) if p.exists()),
              Path("/work/shared/bin/prometheus-k8s-sd"))
ROLES = ("endpoints", "endpointslice", "pod", "service", "node", "ingress")
# Targets must be unique by URL for the comparison (Prometheus keeps one of several targets with equal
# labels), so the path carries what tells them apart. Only __metrics_path__ is rewritten: Prometheus
# v2.42 shows relabeling's first appended label in place of one discovered label (its bug).
UNIQUE_PATH = """\
    relabel_configs:
      - source_labels: [__meta_kubernetes_endpoint_port_name, __meta_kubernetes_endpointslice_port_name,
          __meta_kubernetes_pod_container_name, __meta_kubernetes_pod_container_port_name,
          __meta_kubernetes_service_port_name, __meta_kubernetes_ingress_path]
        target_label: __metrics_path__
        replacement: /m/$1
"""


# vmagent keeps a running target, and the discoveredLabels it started with, while its labels after
# relabeling stay the same (its scraper key leaves the discovered labels out), so a Service's or a
# node's new label would not show there. For vmagent the labels the test changes are also mapped
# into the target's labels: a change is then a new target, whose discoveredLabels are compared.
VMAGENT_RELABEL = """\
      - regex: __meta_kubernetes_((service|node)_label_.+)
        action: labelmap
"""


def _oracle_config(api: FakeK8s, kubeconfig: Path, extra: str = "") -> str:
    out = "global:\n  scrape_interval: 1h\n  scrape_timeout: 10s\nscrape_configs:\n"
    for role in ROLES:
        out += (f"  - job_name: {role}\n    kubernetes_sd_configs:\n      - role: {role}\n"
                f"        api_server: {api.url}\n" + UNIQUE_PATH + extra)
    for role in ("endpoints", "endpointslice", "pod"):
        out += (f"  - job_name: {role}-node\n    kubernetes_sd_configs:\n      - role: {role}\n"
                f"        kubeconfig_file: {kubeconfig}\n        attach_metadata: {{node: true}}\n"
                "        namespaces: {names: [kube-system]}\n"
                "        selectors: [{role: " + role + ", label: 'component=etcd'}]\n" + UNIQUE_PATH + extra)
    return out


def _view(targets: list[dict[str, Any]], *, port80: bool, drop_path: bool) -> dict[tuple[str, str], Any]:
    """(scrape pool, scrape URL) -> (labels, discoveredLabels). ``port80``: the peer adds the scheme's
    port to a port-less address (Prometheus 2 and vmagent do; Prometheus 3 and the relay do not), put
    back as the relay has it. ``drop_path``: leave ``__metrics_path__`` out of discoveredLabels."""
    out = {}
    for t in targets:
        found = dict(t["discoveredLabels"])
        if drop_path:
            found.pop("__metrics_path__")
        url, labels = t["scrapeUrl"], dict(t["labels"])
        address = found["__address__"]
        if port80 and ":" not in address:
            url = url.replace(f"{address}:80/", f"{address}/", 1)
            labels["instance"] = address
        out[(t["scrapePool"], url)] = (labels, found)
    return out


def _targets_of(port: int) -> list[dict[str, Any]]:
    status, body = _get(f"http://127.0.0.1:{port}/api/v1/targets")
    assert status == 200
    return list(body["data"]["activeTargets"])


class Allowance(NamedTuple):
    """One known way in which Debian's vmagent (1.79) differs from Prometheus v2.42 (and so from the
    relay) in the labels it discovers. ``kind``: ``"vmagent"`` (only vmagent has the label),
    ``"relay"`` (only the relay has it), ``"value"`` (both, with other values), ``"empty"`` (vmagent
    has it with an empty value, the relay has none). ``where(vmagent_labels, relay_labels, name)``
    narrows it to the targets it is about."""

    name: str
    roles: frozenset[str]
    label: str  # a regular expression, matched in full
    kind: str
    why: str
    where: Callable[[dict[str, str], dict[str, str], str], bool] = lambda vm, ours, name: True


_ENDPOINT_ROLES = frozenset({"endpoints", "endpointslice"})
VMAGENT_ALLOWANCES = (
    Allowance("empty-values", frozenset(ROLES), r".+", "empty",
              "vmagent keeps discovered labels whose value is empty (node provider_id, labels such as "
              "node-role.kubernetes.io/control-plane: ''); Prometheus drops them, as an empty label is no label"),
    Allowance("interval-format", frozenset(ROLES), "__scrape_interval__", "value",
              "the same interval, written by Go's time.Duration (1h0m0s) rather than Prometheus' model.Duration (1h)",
              lambda vm, ours, name: (vm[name], ours[name]) == ("1h0m0s", "1h")),
    Allowance("service-type-and-ip", _ENDPOINT_ROLES, "__meta_kubernetes_service_(type|cluster_ip)", "vmagent",
              "vmagent adds the Service's type and cluster IP to endpoint targets; Prometheus v2.42 adds only "
              "the Service's name, labels and annotations there (type and cluster IP are the service role's)"),
    Allowance("slice-own-labels", frozenset({"endpointslice"}),
              "__meta_kubernetes_endpointslice_(label|labelpresent|annotation|annotationpresent)_.+", "vmagent",
              "vmagent labels targets with the EndpointSlice's own labels; Prometheus v2.42 does not"),
    Allowance("node-annotations", frozenset({"endpoints", "endpointslice", "pod"}),
              "__meta_kubernetes_node_(annotation|annotationpresent)_.+", "vmagent",
              "with attach_metadata.node vmagent attaches the node's annotations too; Prometheus v2.42 its labels only"),
    Allowance("slice-conditions", frozenset({"endpointslice"}),
              "__meta_kubernetes_endpointslice_endpoint_conditions_(serving|terminating)", "relay",
              "vmagent 1.79 sets only conditions_ready (serving and terminating came in VictoriaMetrics 1.102)"),
    Allowance("container-image", frozenset({"endpoints", "pod"}),
              "__meta_kubernetes_pod_container_image", "relay", "not in vmagent 1.79 (VictoriaMetrics 1.81 added it)"),
    Allowance("container-id", frozenset({"pod"}), "__meta_kubernetes_pod_container_id", "relay",
              "not in vmagent 1.79 (VictoriaMetrics 1.87 added it)"),
    Allowance("service-port-number", frozenset({"service"}), "__meta_kubernetes_service_port_number", "relay",
              "not in vmagent 1.79 (VictoriaMetrics 1.81 added it)"),
    Allowance("extra-port-targets", frozenset({"endpoints"}),
              "__meta_kubernetes_endpoints_(name|label_.+|labelpresent_.+)", "relay",
              "the extra targets for pod container ports the Service does not list: vmagent builds them from the "
              "pod and the Service only, Prometheus v2.42 from the Endpoints object's labels too",
              lambda vm, ours, name: "__meta_kubernetes_endpoint_port_name" not in ours),
    Allowance("container-port-protocol", frozenset({"endpoints"}),
              "__meta_kubernetes_pod_container_port_protocol", "value",
              "a pod with one port number for two protocols (CoreDNS' 53 UDP and TCP): vmagent gives the first "
              "matching container port's protocol, Prometheus v2.42 the endpoint port's",
              lambda vm, ours, name: ours[name] == ours.get("__meta_kubernetes_endpoint_port_protocol")),
)


def _allowed(allowances: tuple[Allowance, ...], role: str, name: str, vm: dict[str, str], ours: dict[str, str],
             used: set[str]) -> bool:
    if name in vm and name in ours:
        kind = "value"
    elif name in vm:
        kind = "empty" if vm[name] == "" else "vmagent"
    else:
        kind = "relay"
    for a in allowances:
        if a.kind == kind and role in a.roles and re.fullmatch(a.label, name) and a.where(vm, ours, name):
            used.add(a.name)
            return True
    return False


def _disagreements(theirs: dict[Any, Any], ours: dict[Any, Any], allowances: tuple[Allowance, ...],
                   used: set[str]) -> list[str]:
    """What the peer (``theirs``) and the relay disagree on, past ``allowances``: targets found by one
    only, and per target each label (after relabeling, and discovered) that differs."""
    lines = [f"only the peer: {k}" for k in sorted(set(theirs) - set(ours))]
    lines += [f"only the relay: {k}" for k in sorted(set(ours) - set(theirs))]
    for k in sorted(set(theirs) & set(ours)):
        role = k[0].removesuffix("-node")
        for x, y, what in zip(theirs[k], ours[k], ("labels", "discoveredLabels"), strict=True):
            for n in sorted(set(x) | set(y)):
                if x.get(n) != y.get(n) and not (what == "discoveredLabels" and _allowed(allowances, role, n, x, y, used)):
                    lines.append(f"{k} {what} {n}: peer {x.get(n)!r}, relay {y.get(n)!r}")
    return lines


def _peer_command(peer: str, config: Path, port: int, data: Path) -> list[str]:
    import shutil

    if peer == "prometheus":
        if not ORACLE.exists():
            missing_service(f"{ORACLE} (../shared/bin) is not there")
        return [str(ORACLE), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    exe = shutil.which("vmagent")
    if exe is None:
        missing_service("vmagent is not installed (Debian package vmagent)")
    # Its targets follow discovery every -promscrape.kubernetesSDCheckInterval (30 s by default).
    return [exe, f"-promscrape.config={config}", "-promscrape.kubernetesSDCheckInterval=1s",
            f"-httpListenAddr=127.0.0.1:{port}", "-remoteWrite.url=http://127.0.0.1:1/api/v1/write",
            f"-remoteWrite.tmpDataPath={data}", "-loggerLevel=WARN"]


@pytest.fixture(params=["prometheus", "vmagent"])
def oracle_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A peer (Prometheus v2.42's discovery, or Debian's vmagent) and a real ``relay run`` on one fake
    API server; yields ``(api, same, used)``: ``same(check)`` waits until both show the same targets,
    past the peer's allowances (``used`` collects the names of those that were needed)."""
    import subprocess
    import sys
    import time

    from relay.devtools.localenv import free_ports, wait_http

    peer: str = request.param
    # No token: v2.42 sends none from a kubeconfig to a plain-http server (the relay's kubeconfig
    # token is tested above).
    api = FakeK8s().start()
    api.load(kubeadm_objects(NODES))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster: {{server: '{api.url}'}}\n"
        "users:\n- name: u\n  user: {}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n")
    config = tmp_path / "sd.yml"
    config.write_text(_oracle_config(api, kubeconfig, "" if peer == "prometheus" else VMAGENT_RELABEL))
    peer_port, relay_port = free_ports(2)
    command = _peer_command(peer, config, peer_port, tmp_path / "vmagent-data")
    # Prometheus v2.42 corrupts __metrics_path__ in discoveredLabels (see UNIQUE_PATH); vmagent does not.
    prometheus = peer == "prometheus"
    allowances = () if prometheus else VMAGENT_ALLOWANCES
    used: set[str] = set()
    with open(tmp_path / "peer.log", "wb") as peer_log, open(tmp_path / "relay.log", "wb") as relay_log:
        procs = [
            subprocess.Popen(command, stdout=peer_log, stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "relay.cli", "run", "--config", str(config),
                              "--listen", f"127.0.0.1:{relay_port}"], stdout=relay_log, stderr=subprocess.STDOUT),
        ]
    try:
        wait_http(f"http://127.0.0.1:{peer_port}/-/healthy" if not prometheus
                  else f"http://127.0.0.1:{peer_port}/-/ready", 30, procs[0])
        wait_http(f"http://127.0.0.1:{relay_port}/-/healthy", 30, procs[1])

        def same(check: Any = bool, timeout: float = 40.0) -> dict[Any, Any]:
            """The relay's view, once the peer agrees with it and it passes ``check`` (Prometheus passes
            discovery on every 5 s, vmagent every 1 s here)."""
            deadline = time.monotonic() + timeout
            while True:
                theirs = _view(_targets_of(peer_port), port80=True, drop_path=prometheus)
                ours = _view(_targets_of(relay_port), port80=False, drop_path=prometheus)
                seen: set[str] = set()
                wrong = _disagreements(theirs, ours, allowances, seen)
                if not wrong and check(ours):
                    used.update(seen)
                    return ours
                if time.monotonic() > deadline:
                    raise AssertionError(f"{peer} and the relay disagree:\n" + "\n".join(wrong[:20]))
                time.sleep(0.5)

        yield api, same, used, allowances
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        api.stop()


def test_vmagent_allowances_are_narrow() -> None:
    """Each allowance excuses only its own kind of difference, in its roles: a label missing on one
    side that no allowance names, or an unexpected value, is still a disagreement."""
    used: set[str] = set()
    key = ("endpoints", "http://10.0.0.1:53/m/dns")
    relay = {"__meta_kubernetes_service_name": "dns", "__meta_kubernetes_pod_container_port_protocol": "TCP",
             "__meta_kubernetes_endpoint_port_protocol": "TCP", "__meta_kubernetes_endpoint_port_name": "dns",
             "__meta_kubernetes_endpoints_name": "dns", "__scrape_interval__": "1h"}
    vm = {**relay, "__meta_kubernetes_service_type": "ClusterIP", "__meta_kubernetes_pod_container_port_protocol": "UDP",
          "__meta_kubernetes_node_provider_id": "", "__scrape_interval__": "1h0m0s"}
    assert _disagreements({key: ({}, vm)}, {key: ({}, relay)}, VMAGENT_ALLOWANCES, used) == []
    assert used == {"service-type-and-ip", "container-port-protocol", "empty-values", "interval-format"}
    for theirs, ours, wrong in (
        ({**vm, "__meta_kubernetes_service_type": "NodePort", "__meta_kubernetes_pod_label_a": "b"}, relay,
         "__meta_kubernetes_pod_label_a"),  # a label only vmagent has, no allowance for it
        ({k: v for k, v in vm.items() if k != "__meta_kubernetes_endpoints_name"}, relay,
         "__meta_kubernetes_endpoints_name"),  # only for the extra container-port targets
        ({**vm, "__scrape_interval__": "2h0m0s"}, relay, "__scrape_interval__"),
        (vm, {**relay, "__meta_kubernetes_pod_container_port_protocol": "SCTP"}, "container_port_protocol"),
    ):
        (line,) = _disagreements({key: ({}, theirs)}, {key: ({}, ours)}, VMAGENT_ALLOWANCES, set())
        assert wrong in line, line
    # The same label in a role the allowance does not name.
    svc = ("service", "http://dns.ns.svc:53/m/dns")
    (line,) = _disagreements({svc: ({}, {"__meta_kubernetes_pod_container_image": "x"})}, {svc: ({}, {})},
                             VMAGENT_ALLOWANCES, set())
    assert "container_image" in line


@pytest.mark.slow
def test_same_targets_as_oracles_before_and_after_events_and_410(oracle_pair: Any) -> None:
    """Prometheus v2.42 and vmagent, each against the relay: the same targets with the same labels and
    discoveredLabels (vmagent past its VMAGENT_ALLOWANCES), before and after watch events and a 410."""
    from .fakek8s import _etcd_pod, _node, etcd_endpoints, etcd_endpointslice

    api, same, used, allowances = oracle_pair
    first = same()
    pools = {pool for pool, _ in first}
    assert pools == {*ROLES, "endpoints-node", "endpointslice-node", "pod-node"}
    etcd = first[("endpoints-node", "http://127.0.13.2:2381/m/http;;;;;")]
    assert etcd[1]["__meta_kubernetes_node_label_kubernetes_io_hostname"] == "cp-2"
    assert sum(pool == "endpoints" for pool, _ in first) == 12
    # Add a member (node, pod, then its not-ready address), relabel the Service, delete objects.
    four = [*NODES, ("cp-4", "127.0.13.4")]
    # Each object is known to all before one that refers to it arrives, as in a cluster (the node
    # registers before its pods, the pod runs before its address is listed): Prometheus v2.42 joins
    # an address to the pod its cache has at that moment, and does not look again when it arrives.
    api.put("nodes", _node("cp-4", "127.0.13.4"))
    same(lambda v: ("node", "http://127.0.13.4:10250/m/;;;;;") in v)
    api.put("pods", _etcd_pod("cp-4", "127.0.13.4"))
    same(lambda v: ("pod", "http://127.0.13.4/m/;;etcd;;;") in v)
    api.put("endpoints", etcd_endpoints(four, not_ready=("cp-4",)))
    api.put("endpointslices", etcd_endpointslice(four))
    svc = next(o for o in kubeadm_objects(NODES)["services"] if o["metadata"]["name"] == "etcd")
    svc["metadata"]["labels"]["app.kubernetes.io/name"] = "etcd"
    api.put("services", svc)
    api.delete("endpoints", "kube-dns", "kube-system")
    api.delete("ingresses", "grafana", "default")
    four_url = ("endpoints", "http://127.0.13.4:2381/m/http;;;;;")
    after = same(lambda v: four_url in v and not any(pool == "ingress" for pool, _ in v))
    assert after[("endpoints", "http://127.0.13.4:2381/m/http;;;;;")][1]["__meta_kubernetes_endpoint_ready"] == "false"
    assert after[("endpoints", "http://127.0.13.1:2381/m/http;;;;;")][1][
        "__meta_kubernetes_service_label_app_kubernetes_io_name"] == "etcd"
    assert not any(pool == "ingress" for pool, _ in after)
    # The history is compacted, and every watch stream ends as at its timeout: both watch again from
    # their last resourceVersion, get 410 Gone, list again and agree. Meanwhile member cp-3's address
    # goes from the Endpoints and the EndpointSlice (as the controllers do), cp-4's pod goes and its
    # node is relabeled (nothing else is joined to that node by then).
    lists, gone = api.count("endpoints", watch=False), api.gone.count("endpoints")
    api.compact()
    api.end_watches()
    api.put("endpoints", etcd_endpoints(NODES[:2]))
    api.put("endpointslices", etcd_endpointslice(NODES[:2]))
    api.delete("pods", "etcd-cp-4", "kube-system")
    node = _node("cp-4", "127.0.13.4")
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = "a"
    api.put("nodes", node)
    zone = "__meta_kubernetes_node_label_topology_kubernetes_io_zone"
    cp4 = ("node", "http://127.0.13.4:10250/m/;;;;;")
    relisted = same(lambda v: ("endpoints", "http://127.0.13.3:2381/m/http;;;;;") not in v
                    and ("endpointslice", "http://127.0.13.3:2381/m/;http;;;;") not in v
                    and ("pod", "http://127.0.13.4/m/;;etcd;;;") not in v and cp4 in v and zone in v[cp4][1])
    assert api.count("endpoints", watch=False) >= lists + 2
    assert api.gone.count("endpoints") >= gone + 4  # the peer's and the relay's two endpoints watches
    assert not any("127.0.13.3:2381" in url for pool, url in relisted if pool.startswith("endpoint"))
    # A node's new label reaches the targets joined to it (attach_metadata.node), from a watch event.
    # (Not during the re-list: vmagent 1.79 loses a node's change to the objects joined to it when
    # their own re-list comes after the nodes'; and not a deleted node: Prometheus v2.42 with
    # attach_metadata.node panics on a node deleted while its watch was down,
    # DeletedFinalStateUnknown in endpoints.go.)
    node = _node("cp-1", "127.0.13.1")
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = "b"
    api.put("nodes", node)
    joined = [("node", "http://127.0.13.1:10250/m/;;;;;"), ("endpoints-node", "http://127.0.13.1:2381/m/http;;;;;"),
              ("endpointslice-node", "http://127.0.13.1:2381/m/;http;;;;"), ("pod-node", "http://127.0.13.1/m/;;etcd;;;")]
    same(lambda v: all(k in v and zone in v[k][1] for k in joined))
    assert used == {a.name for a in allowances}, "allowances never needed: " + str({a.name for a in allowances} - used)


# -- end to end: the issue's config, in-cluster, scraping `relay sim` members ----------------------


@pytest.mark.slow
def test_issue_config_scrapes_etcd_members_in_cluster(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from relay.devtools.localenv import make_tls_files, wait_http

    port = 2381
    for _, ip in NODES:
        with socket.socket() as s:
            if s.connect_ex((ip, port)) == 0:
                pytest.skip(f"{ip}:{port} is taken")
    tls = make_tls_files(tmp_path / "tls")
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("in-cluster-token")
    (sa / "namespace").write_text("monitoring")
    (sa / "ca.crt").write_bytes(Path(tls.ca_file).read_bytes())
    config = tmp_path / "relay.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + ISSUE_JOB.format(extra=""))
    sims = [subprocess.Popen([sys.executable, "-m", "relay.cli", "sim", "--members", "1", "--host", ip,
                              "--base-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _, ip in NODES]
    try:
        for (_, ip), proc in zip(NODES, sims, strict=True):
            wait_http(f"http://{ip}:{port}/metrics", 30, proc)
        with FakeK8s(token="in-cluster-token", tls=(tls.server_cert, tls.server_key)) as api:
            api.load(kubeadm_objects(NODES, etcd_port=port))
            env = {**os.environ, "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": api.url.rsplit(":", 1)[1],
                   "RELAY_SERVICE_ACCOUNT_DIR": str(sa)}
            out, stats = tmp_path / "samples.jsonl", tmp_path / "stats.json"
            done = subprocess.run([sys.executable, "-m", "relay.cli", "run", "--config", str(config), "--listen",
                                   "127.0.0.1:0", "--sink-jsonl", str(out), "--duration", "6", "--stats-file", str(stats)],
                                  env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert api.count("endpoints", watch=True) >= 1
    finally:
        for p in sims:
            p.terminate()
            p.wait(10)
    assert json.loads(stats.read_text())["targets"] == 3
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    ups = {(s["labels"]["instance"], s["value"]) for s in samples if s["name"] == "up"}
    assert {i for i, _ in ups} == {f"{ip}:{port}" for _, ip in NODES}  # kube-dns and the apiserver are not kept
    assert all(v == 1 for _, v in ups), ups
    leaders = {s["labels"]["instance"] for s in samples if s["name"] == "etcd_server_has_leader"}
    assert leaders == {f"{ip}:{port}" for _, ip in NODES}
    assert all(s["labels"]["job"] == "etcd" for s in samples)


def test_cached_build_follows_joined_objects() -> None:
    from relay.discovery.kubernetes import build_groups

    objects = kubeadm_objects(NODES)
    for resource, objs in objects.items():
        for n, o in enumerate(objs):
            o["metadata"]["resourceVersion"] = f"{resource}-{n}"
    stores = _stores("endpoints", objects, attach_node=True)
    cache: dict[str, Any] = {}
    first = build_groups("endpoints", stores, cache)
    again = build_groups("endpoints", stores, cache)
    assert again == first and all(a is b for a, b in zip(again, first, strict=True))  # reused
    for slot, key, label in (("pods", "kube-system/etcd-cp-1", "pod_label_x"),
                             ("services", "kube-system/etcd", "service_label_x"),
                             ("nodes", "cp-1", "node_label_x")):
        old = getattr(stores, slot)[key]
        new = {**old, "metadata": {**old["metadata"], "resourceVersion": "new-" + slot,
                                   "labels": {**old["metadata"]["labels"], "x": "1"}}}
        getattr(stores, slot)[key] = new
        groups = build_groups("endpoints", stores, cache)
        etcd1 = next(dict(g.labels) for g in groups if g.targets == ("127.0.13.1:2381",))
        assert etcd1[f"__meta_kubernetes_{label}"] == "1", slot
        assert groups == build_groups("endpoints", stores)  # the same as without a cache
    del stores.main["kube-system/etcd"]
    assert not any(g.targets[0].endswith(":2381") for g in build_groups("endpoints", stores, cache))
    assert "kube-system/etcd" not in cache


@pytest.mark.anyio
async def test_bookmarks_spare_a_relist() -> None:
    from .fakek8s import etcd_endpoints

    with FakeK8s(bookmark_interval=0.1) as api:
        api.load(kubeadm_objects(NODES))
        run = _Run([_cfg(api)])

        async def body(r: _Run) -> None:
            import anyio

            await r.until(lambda: r.addresses() >= ETCD)
            lists = api.count("endpoints", watch=False)
            api.compact()  # no event comes after this, only bookmarks at the new resourceVersion
            await anyio.sleep(0.5)
            api.drop_watches()
            api.put("endpoints", etcd_endpoints(NODES[:1]))
            await r.until(lambda: "127.0.13.2:2381" not in r.addresses())
            assert api.count("endpoints", watch=False) == lists, [(p, q) for p, q in api.requests if p.endswith("endpoints")]

        await run(body)()


def test_kubeconfig_inline_data_and_errors(tmp_path: Path) -> None:
    import base64
    import os

    from relay.config import KubernetesSDConfig
    from relay.discovery.base import DiscoveryError
    from relay.discovery.kubernetes import resolve_connection

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: admin@kubernetes\n"
        "clusters:\n- name: kubernetes\n  cluster:\n    server: https://10.0.0.1:6443\n"
        f"    certificate-authority-data: {b64('CA PEM')}\n    tls-server-name: kubernetes\n"
        f"users:\n- name: admin\n  user:\n    client-certificate-data: {b64('CERT PEM')}\n"
        f"    client-key-data: {b64('KEY PEM')}\n"
        "contexts:\n- name: admin@kubernetes\n  context: {cluster: kubernetes, user: admin, namespace: kube-system}\n")
    conn = resolve_connection(KubernetesSDConfig(role="pod", kubeconfig_file=str(path)))
    tls = conn.http.tls_config
    assert conn.server == "https://10.0.0.1:6443" and conn.namespace == "kube-system" and tls.server_name == "kubernetes"
    assert tls.ca_file and Path(tls.ca_file).read_text() == "CA PEM"
    assert tls.cert_file and Path(tls.cert_file).read_text() == "CERT PEM"
    assert tls.key_file and Path(tls.key_file).read_text() == "KEY PEM" and os.stat(tls.key_file).st_mode & 0o077 == 0
    for text, message in (
        ("current-context: x\ncontexts: []\n", "no context named 'x'"),
        ("current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://h'}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n",
         "user exec plugins are not supported"),
        ("[1, 2\n", "cannot read"),
    ):
        path.write_text(text)
        with pytest.raises(DiscoveryError, match=message) as info:
            resolve_connection(KubernetesSDConfig(role="pod", kubeconfig_file=str(path)))
        assert str(info.value).startswith(f"kubeconfig_file {path}:") and "\n" not in str(info.value)


@pytest.mark.anyio
async def test_scrape_manager_relabels_only_new_group_objects() -> None:
    from relay.discovery.base import TargetGroup
    from relay.http.client import ClientPool
    from relay.metrics import SelfMetrics
    from relay.scrape import ScrapeManager, _Job

    cfg = parse_config("scrape_configs:\n" + "\n".join("  " + line for line in ISSUE_JOB.format(extra="").splitlines()))
    sc = cfg.scrape_configs[0]
    labels = (("__meta_kubernetes_endpoint_port_name", "http"), ("__meta_kubernetes_namespace", "kube-system"),
              ("__meta_kubernetes_service_name", "etcd"))
    kept, dropped = TargetGroup("a", ("127.0.13.1:2381",), labels), TargetGroup("b", ("10.0.0.1:53",), labels[1:])
    m = ScrapeManager(ClientPool(), [], SelfMetrics())
    m.config = cfg
    m.jobs["etcd"] = job = _Job(sc, [], groups={0: [kept, dropped]})
    first = m._desired()
    assert [t.url for t in first.values()] == ["http://127.0.13.1:2381/metrics"]
    again = m._desired()
    assert all(again[k] is first[k] for k in first)  # the same group object: not relabeled again
    moved = TargetGroup("a", ("127.0.13.1:2381",), (*labels, ("__meta_kubernetes_pod_name", "etcd-cp-1")))
    job.groups[0] = [moved]
    third = m._desired()
    (t,) = third.values()
    assert t is not next(iter(first.values())) and dict(t.discovered_labels)["__meta_kubernetes_pod_name"] == "etcd-cp-1"
    assert len(job.built) == 1  # entries of groups gone are dropped
