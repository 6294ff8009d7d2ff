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
