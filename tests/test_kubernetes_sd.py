"""kubernetes_sd_configs: config, the fake API server, each role's labels, list+watch, the oracle.

The oracle is ``/work/shared/bin/prometheus-k8s-sd`` (Prometheus v2.42.0's own Kubernetes
discovery), pointed at the same fake API server (tests/fakek8s.py) as the relay.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from relay._exceptions import ConfigError
from relay.config import parse_config

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
