"""The Kubernetes manifests in deploy/ hold together, and agree with the relay they run.

Every check is a function of the parsed YAML documents that returns the problems it finds (one
line each, naming the file and object), so the same checks run on deploy/ as it is (must find
none) and on deliberately broken copies of it (must find the break). No cluster, no network:
the relay's own argument parser and config parser judge the relay's flags and config files.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fnmatch
import io
import posixpath
import re
import shlex
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay._exceptions import ConfigError
from relay.cli import _cluster_from_flags, build_parser
from relay.config import (
    K8S_ROLES,
    Config,
    HTTPClientConfig,
    KubernetesSDConfig,
    parse_config,
    validate_cluster,
)
from relay.discovery import DiscoveryError, read_file_sd
from relay.discovery.kubernetes import RESOURCES
from relay.http.server import parse_listen

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

RELAY_IMAGE = "etcd-metrics-relay"
APP_LABEL = "app.kubernetes.io/name"
# What the image runs when a container gives no `command` (deploy/Dockerfile's ENTRYPOINT).
ENTRYPOINT = ["relay"]
# Namespaces that the manifests use but do not create.
EXTERNAL_NAMESPACES = {"kube-system"}
# Secrets that the operator creates (the manifests say how): (namespace, name).
EXTERNAL_SECRETS = {("etcd-metrics-relay", "etcd-client-tls")}
# Pods that Services in deploy/ select but that deploy/ does not run: namespace -> their labels
# (kubeadm's etcd static pods etcd-<node>).
EXTERNAL_PODS = {"kube-system": [{"component": "etcd", "tier": "control-plane"}]}
# Files whose pods may run as root (kubeadm's 0600 root-owned client key; see the file).
ROOT_ALLOWED = {"daemonset/tls/relay.yaml"}
# Objects of example workloads that are not the relay: file -> allowed app.kubernetes.io/name.
EXAMPLE_APPS = {"sidecar/etcd.yaml": {"etcd"}}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
WORKLOADS = {"DaemonSet", "StatefulSet", "Deployment", "ReplicaSet", "Job"}
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Values that the downward API would give, for expanding $(VAR) in commands.
SAMPLE_FIELDS = {"status.hostIP": "10.0.0.1", "status.podIP": "10.0.0.1", "spec.nodeName": "node-1"}


@dataclass
class Doc:
    """One YAML document of a manifest file under deploy/."""

    file: str  # relative to deploy/, with /
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.body.get("metadata") or {}).get("namespace", ""))

    def __str__(self) -> str:
        return f"{self.file}[{self.index}] {self.kind}/{self.name}"


def load_docs(root: Path = DEPLOY) -> list[Doc]:
    docs = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
        rel = path.relative_to(root).as_posix()
        for i, body in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if body is not None:
                docs.append(Doc(rel, i, body))
    return docs


# -- helpers over pods and containers ------------------------------------------------------------


def pod_template(doc: Doc) -> dict[str, Any] | None:
    if doc.kind in WORKLOADS:
        template: dict[str, Any] = doc.body.get("spec", {}).get("template", {})
        return template
    return None


def pod_spec(doc: Doc) -> dict[str, Any] | None:
    template = pod_template(doc)
    return None if template is None else template.get("spec", {})


def template_labels(doc: Doc) -> dict[str, str]:
    template = pod_template(doc) or {}
    return dict((template.get("metadata") or {}).get("labels") or {})


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def is_relay_image(container: dict[str, Any]) -> bool:
    image = str(container.get("image", ""))
    return image.rsplit("/", 1)[-1].split(":", 1)[0] == RELAY_IMAGE


def relay_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The relay processes of a pod (init containers of the relay image are helpers)."""
    return [c for c in spec.get("containers", []) if is_relay_image(c)]


def workloads(docs: Sequence[Doc]) -> Iterator[tuple[Doc, dict[str, Any]]]:
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            yield doc, spec


def find(docs: Sequence[Doc], kind: str, namespace: str, name: str, near: Doc) -> Doc | None:
    """The object that ``near`` refers to: from its own folder if there is one there (a variant
    in a subfolder defines the same objects as its parent folder, to replace them), else from
    anywhere in deploy/ (such as deploy/namespace.yaml)."""
    found = [d for d in docs if d.kind == kind and d.namespace == namespace and d.name == name]
    here = [d for d in found if posixpath.dirname(d.file) == posixpath.dirname(near.file)]
    return here[0] if here else found[0] if found else None


def subset(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_number(container: dict[str, Any], port: object) -> int | None:
    """The containerPort that a probe's or Service's port (a name or a number) refers to."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return int(p["containerPort"])
    return None


def mount_volume(spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], str] | None:
    """The volume mount whose path holds ``path`` (the deepest), and the path inside it."""
    best: tuple[dict[str, Any], str] | None = None
    for m in container.get("volumeMounts", []):
        mount = posixpath.normpath(m["mountPath"])
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(posixpath.normpath(best[0]["mountPath"]))):
            best = (m, posixpath.relpath(path, mount))
    return best


def volume(spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    for v in spec.get("volumes", []):
        if v.get("name") == name:
            return dict(v)
    return None


def claim_names(doc: Doc) -> set[str]:
    if doc.kind != "StatefulSet":
        return set()
    return {t["metadata"]["name"] for t in doc.body["spec"].get("volumeClaimTemplates", [])}


# -- the relay's command line --------------------------------------------------------------------


def pod_names(doc: Doc) -> list[str]:
    """Sample pod names: every ordinal of a StatefulSet, one name for anything else."""
    if doc.kind == "StatefulSet":
        return [f"{doc.name}-{i}" for i in range(int(doc.body["spec"].get("replicas", 1)))]
    return [f"{doc.name}-x7k2p"]


def env_values(doc: Doc, container: dict[str, Any], pod_name: str) -> dict[str, str]:
    fields = {**SAMPLE_FIELDS, "metadata.name": pod_name, "metadata.namespace": doc.namespace}
    out = {}
    for e in container.get("env", []):
        if "value" in e:
            out[e["name"]] = str(e["value"])
        else:
            ref = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath", "")
            out[e["name"]] = fields.get(ref, f"<{ref or 'unknown source'}>")
    return out


_K8S_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_k8s(text: str, env: dict[str, str], undefined: list[str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args; collects references to undefined vars."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) in env:
            return env[m.group(1)]
        undefined.append(m.group(1))
        return m.group(0)

    return _K8S_VAR.sub(sub, text)


def expand_shell(script: str, hostname: str) -> str:
    """The few shell expansions the manifests may use in a `sh -c` wrapper; others are errors."""
    script = script.replace("${HOSTNAME##*-}", hostname.rsplit("-", 1)[-1])
    script = script.replace("${HOSTNAME}", hostname).replace("$HOSTNAME", hostname)
    if "$" in script or "`" in script:
        raise ValueError(f"unsupported shell expansion in {script!r}")
    return script


def relay_argv(doc: Doc, container: dict[str, Any], pod_name: str) -> list[str]:
    """The relay's argv (without the program name) in pod ``pod_name``; ValueError if unclear."""
    env = env_values(doc, container, pod_name)
    undefined: list[str] = []
    raw = [expand_k8s(str(a), env, undefined) for a in container.get("command") or ENTRYPOINT]
    raw += [expand_k8s(str(a), env, undefined) for a in container.get("args", [])]
    if undefined:
        raise ValueError(f"$({undefined[0]}) is not a declared env var")
    if raw[:2] in (["sh", "-c"], ["/bin/sh", "-c"]) and len(raw) >= 3:
        raw = shlex.split(expand_shell(raw[2], pod_name))
        if raw[:1] == ["exec"]:
            raw = raw[1:]
        if any(t in (";", "&&", "||", "|") for t in raw):
            raise ValueError("the shell wrapper must only `exec relay ...`")
    if not raw or raw[0] not in ("relay", "/opt/relay/bin/relay"):
        raise ValueError(f"does not run relay: {raw[:3]}")
    return raw[1:]


def parse_relay_args(argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        raise ValueError(err.getvalue().strip() or "relay's argument parser refused the arguments") from None


def relay_runs(docs: Sequence[Doc]) -> Iterator[tuple[Doc, dict[str, Any], dict[str, Any], str, argparse.Namespace]]:
    """(doc, pod spec, container, pod name, parsed args) for every relay process; bad argv skipped."""
    for doc, spec in workloads(docs):
        for c in relay_containers(spec):
            for pod in pod_names(doc):
                try:
                    args = parse_relay_args(relay_argv(doc, c, pod))
                except ValueError:
                    continue  # reported by check_relay_command
                yield doc, spec, c, pod, args


# -- the checks ----------------------------------------------------------------------------------

Check = Callable[[Sequence[Doc]], list[str]]


def check_identity(docs: Sequence[Doc]) -> list[str]:
    """apiVersion, kind, name and the app label on every object; no duplicates in one folder."""
    problems = []
    seen: dict[tuple[str, str, str, str], Doc] = {}
    for doc in docs:
        meta = doc.body.get("metadata") or {}
        for key, value in (("apiVersion", doc.body.get("apiVersion")), ("kind", doc.kind), ("metadata.name", doc.name)):
            if not value:
                problems.append(f"{doc}: no {key}")
        app = (meta.get("labels") or {}).get(APP_LABEL)
        allowed = {RELAY_IMAGE} | EXAMPLE_APPS.get(doc.file, set())
        if app not in allowed:
            problems.append(f"{doc}: label {APP_LABEL} is {app!r}, not one of {sorted(allowed)}")
        # `kubectl apply -f FOLDER` applies one folder: two objects of one identity there clash.
        identity = (posixpath.dirname(doc.file), doc.kind, doc.namespace, doc.name)
        if identity in seen:
            problems.append(f"{doc}: same kind, namespace and name as {seen[identity]} in the same folder")
        seen[identity] = doc
    return problems


def check_namespaces(docs: Sequence[Doc]) -> list[str]:
    defined = {d.name for d in docs if d.kind == "Namespace"} | EXTERNAL_NAMESPACES
    problems = []
    for doc in docs:
        if doc.kind in CLUSTER_SCOPED:
            continue
        if not doc.namespace:
            problems.append(f"{doc}: no metadata.namespace (it would land in kubectl's current namespace)")
        elif doc.namespace not in defined:
            problems.append(f"{doc}: namespace {doc.namespace!r} is neither in deploy/ nor known to exist")
    return problems


def check_selectors(docs: Sequence[Doc]) -> list[str]:
    """Selectors select: workloads their own pods, Services and PDBs some pods, spreads their own."""
    problems = []
    for doc, spec in workloads(docs):
        labels = template_labels(doc)
        selector = doc.body["spec"].get("selector", {}).get("matchLabels", {})
        if not subset(selector, labels):
            problems.append(f"{doc}: selector {selector} does not match the pod template's labels {labels}")
        spreads = spec.get("topologySpreadConstraints", [])
        for i, spread in enumerate(spreads):
            sel = spread.get("labelSelector", {}).get("matchLabels", {})
            if not subset(sel, labels):
                problems.append(f"{doc}: topologySpreadConstraints[{i}] selects {sel}, not this workload's pods")
        if doc.kind == "StatefulSet":
            svc = find(docs, "Service", doc.namespace, doc.body["spec"].get("serviceName", ""), doc)
            if svc is None:
                problems.append(f"{doc}: serviceName {doc.body['spec'].get('serviceName')!r} is not a Service in deploy/")
            elif svc.body["spec"].get("clusterIP") != "None":
                problems.append(f"{doc}: its serviceName {svc.name!r} must be a headless Service (clusterIP: None)")
    for doc in docs:
        if doc.kind == "Service":
            sel = doc.body["spec"].get("selector", {})
        elif doc.kind == "PodDisruptionBudget":
            sel = doc.body["spec"].get("selector", {}).get("matchLabels", {})
        else:
            continue
        pods = [(w, s) for w, s in workloads(docs) if w.namespace == doc.namespace and subset(sel, template_labels(w))]
        external = any(subset(sel, labels) for labels in EXTERNAL_PODS.get(doc.namespace, []))
        if not pods and not external:
            problems.append(f"{doc}: selector {sel} matches no pod template in namespace {doc.namespace!r}")
        for port in doc.body["spec"].get("ports", []) if doc.kind == "Service" else []:
            target = port.get("targetPort", port.get("port"))
            for w, s in pods:
                if not any(port_number(c, target) is not None for c in s.get("containers", [])):
                    problems.append(f"{doc}: targetPort {target!r} is not a port of {w}")
    return problems


def check_service_accounts(docs: Sequence[Doc]) -> list[str]:
    problems = []
    for doc, spec in workloads(docs):
        sa = spec.get("serviceAccountName")
        if sa is None:
            problems.append(f"{doc}: no serviceAccountName (it would run as the namespace's default)")
        elif find(docs, "ServiceAccount", doc.namespace, sa, doc) is None:
            problems.append(f"{doc}: serviceAccountName {sa!r} is not a ServiceAccount in deploy/")
    return problems


def check_probes(docs: Sequence[Doc]) -> list[str]:
    """Probes reach declared ports; the relay's are /-/healthy (liveness) and /-/ready (readiness)."""
    problems = []
    for doc, spec in workloads(docs):
        for c in all_containers(spec):
            for probe in PROBES:
                if probe not in c:
                    continue
                action = c[probe].get("httpGet") or c[probe].get("tcpSocket")
                if action is None:
                    continue
                if port_number(c, action.get("port")) is None:
                    problems.append(f"{doc}: container {c['name']}: {probe} port {action.get('port')!r} is not declared")
        for c in relay_containers(spec):
            for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
                got = (c.get(probe) or {}).get("httpGet", {}).get("path")
                if got != path:
                    problems.append(f"{doc}: container {c['name']}: {probe} must be httpGet {path}, is {got!r}")
    return problems


def check_volumes(docs: Sequence[Doc]) -> list[str]:
    """Mounts name declared volumes; ConfigMap and Secret volumes name objects that exist."""
    problems = []
    for doc, spec in workloads(docs):
        declared = {v["name"] for v in spec.get("volumes", [])} | claim_names(doc)
        for c in all_containers(spec):
            paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
            if len(paths) != len(set(paths)):
                problems.append(f"{doc}: container {c['name']} mounts two volumes at one path")
            for m in c.get("volumeMounts", []):
                if m["name"] not in declared:
                    problems.append(f"{doc}: container {c['name']} mounts {m['name']!r}, which is not a volume")
        for v in spec.get("volumes", []):
            if "configMap" in v:
                cm = find(docs, "ConfigMap", doc.namespace, v["configMap"].get("name", ""), doc)
                if cm is None:
                    problems.append(f"{doc}: volume {v['name']}: ConfigMap {v['configMap'].get('name')!r} is not in deploy/")
                    continue
                for item in v["configMap"].get("items", []):
                    if item["key"] not in (cm.body.get("data") or {}):
                        problems.append(f"{doc}: volume {v['name']}: ConfigMap {cm.name} has no key {item['key']!r}")
            if "secret" in v:
                name = v["secret"].get("secretName", "")
                if find(docs, "Secret", doc.namespace, name, doc) is None and (doc.namespace, name) not in EXTERNAL_SECRETS:
                    problems.append(f"{doc}: volume {v['name']}: Secret {name!r} is neither in deploy/ nor listed as external")
    return problems


def check_relay_command(docs: Sequence[Doc]) -> list[str]:
    """The relay's flags parse, point into mounts, listen where the probes go, shard consistently."""
    problems = []
    for doc, spec in workloads(docs):
        for c in relay_containers(spec):
            where = f"{doc}: container {c['name']}"
            for pod in pod_names(doc):
                try:
                    args = parse_relay_args(relay_argv(doc, c, pod))
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
                    break
                if args.command != "run":
                    problems.append(f"{where}: runs `relay {args.command}`, not `relay run`")
                    break
                problems += _check_run_args(docs, doc, spec, c, pod, args)
    # Each pod's problems are usually the same for every ordinal: say each once.
    return list(dict.fromkeys(problems))


def _check_run_args(
    docs: Sequence[Doc], doc: Doc, spec: dict[str, Any], c: dict[str, Any], pod: str, args: argparse.Namespace
) -> list[str]:
    where = f"{doc}: container {c['name']}"
    problems = []
    config = posixpath.normpath(args.config)
    found = mount_volume(spec, c, config)
    if not posixpath.isabs(args.config) or found is None:
        problems.append(f"{where}: --config {args.config} is not in a mounted volume")
    else:
        vol = volume(spec, found[0]["name"]) or {}
        if "configMap" in vol:
            cm = find(docs, "ConfigMap", doc.namespace, vol["configMap"].get("name", ""), doc)
            if cm is not None and found[1] not in (cm.body.get("data") or {}):
                problems.append(f"{where}: --config {args.config}: ConfigMap {cm.name} has no key {found[1]!r}")
    try:
        host, port = parse_listen(args.listen)
    except ConfigError as exc:
        return [*problems, f"{where}: {exc}"]
    if host in LOOPBACK:
        problems.append(f"{where}: --listen {args.listen} is loopback: kubelet probes the pod IP")
    for probe in ("livenessProbe", "readinessProbe"):
        probe_port = port_number(c, (c.get(probe) or {}).get("httpGet", {}).get("port"))
        if probe_port is not None and probe_port != port:
            problems.append(f"{where}: --listen port {port} is not the {probe} port {probe_port}")
    if args.queue_dir is not None and not args.queue_memory:  # on disk unless --queue.memory
        q = mount_volume(spec, c, posixpath.normpath(args.queue_dir))
        if q is None or q[0].get("readOnly"):
            problems.append(f"{where}: --queue-dir {args.queue_dir} is not in a writable mounted volume")
        elif doc.kind == "StatefulSet" and q[0]["name"] not in claim_names(doc):
            problems.append(f"{where}: --queue-dir {args.queue_dir} is not on a volumeClaimTemplate (lost on restart)")
    try:
        cluster = _cluster_from_flags(args)
    except ConfigError as exc:
        return [*problems, f"{where}: {exc}"]
    if doc.kind == "StatefulSet" and cluster is not None:
        replicas = int(doc.body["spec"].get("replicas", 1))
        if cluster.members_count != replicas:
            problems.append(f"{where}: --cluster.members-count {cluster.members_count} but replicas is {replicas}")
        if cluster.member_num != int(pod.rsplit("-", 1)[-1]):
            problems.append(f"{where}: pod {pod} gets --cluster.member-num {cluster.member_num}, not its ordinal")
    elif cluster is not None:
        problems.append(f"{where}: --cluster.* flags outside a StatefulSet: replicas have no stable numbers")
    if cluster is not None:
        try:
            validate_cluster(cluster, "--cluster")
        except ConfigError as exc:
            problems.append(f"{where}: pod {pod}: {exc}")
    return problems


def _http_files(http: HTTPClientConfig) -> list[str]:
    tls = http.tls_config
    files = [tls.ca_file, tls.cert_file, tls.key_file]
    if http.basic_auth is not None:
        files.append(http.basic_auth.password_file)
    if http.authorization is not None:
        files.append(http.authorization.credentials_file)
    return [f for f in files if f]


def config_files(config: Config) -> tuple[list[str], list[str]]:
    """(files the relay reads: certificates, keys, passwords; file_sd patterns) of a config."""
    files: list[str] = []
    patterns: list[str] = []
    for sc in config.scrape_configs:
        files += _http_files(sc.http)
        for e in sc.etcd_sd_configs:
            files += _http_files(e.http)
        for f in sc.file_sd_configs:
            patterns += f.files
    for rw in config.remote_write:
        files += _http_files(rw.http)
    return files, patterns


def _is_relay_config(key: str) -> bool:
    # The convention of deploy/: a ConfigMap key ending .yml/.yaml is a relay config; file_sd
    # target files in ConfigMaps end .json.
    return key.endswith((".yml", ".yaml"))


def relay_config(
    docs: Sequence[Doc], doc: Doc, spec: dict[str, Any], c: dict[str, Any], args: argparse.Namespace
) -> tuple[Doc, str, str] | None:
    """(ConfigMap, key, text) of the config that a relay process runs with, if from a ConfigMap."""
    found = mount_volume(spec, c, posixpath.normpath(args.config))
    vol = volume(spec, found[0]["name"]) if found else None
    if found is None or vol is None or "configMap" not in vol:
        return None
    cm = find(docs, "ConfigMap", doc.namespace, vol["configMap"].get("name", ""), doc)
    text = (cm.body.get("data") or {}).get(found[1]) if cm is not None else None
    if cm is None or not isinstance(text, str):
        return None  # reported by check_volumes / check_relay_command
    return cm, found[1], text


def parse_relay_config(cm: Doc, key: str, text: str, args: argparse.Namespace) -> Config:
    """The relay's own config parser on a ConfigMap's key; ConfigError if it refuses it."""
    return parse_config(text, source=f"{cm}:{key}", base=Path(posixpath.dirname(args.config)))


def check_relay_configs(docs: Sequence[Doc]) -> list[str]:
    """Every relay config in a ConfigMap parses, and what it reads is mounted where it runs."""
    problems = []
    used: set[tuple[str, int]] = set()  # (file, index) of the ConfigMaps that relays run with
    for doc, spec, c, _pod, args in relay_runs(docs):
        found = relay_config(docs, doc, spec, c, args)
        if found is None:
            continue
        cm, key, text = found
        used.add((cm.file, cm.index))
        where = f"{doc}: container {c['name']}: config {cm.name}/{key}"
        try:
            config = parse_relay_config(cm, key, text, args)
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
            continue
        files, patterns = config_files(config)
        for f in files:
            if mount_volume(spec, c, posixpath.normpath(f)) is None:
                problems.append(f"{where}: reads {f}, which is not in a mounted volume")
        for pattern in patterns:
            problems += _check_file_sd(docs, doc, spec, c, pattern, where)
    for cm in docs:
        if cm.kind != "ConfigMap":
            continue
        for key, text in (cm.body.get("data") or {}).items():
            if _is_relay_config(key):
                try:
                    parse_config(text, source=f"{cm}:{key}")
                except ConfigError as exc:
                    problems.append(f"{cm}: {key}: {exc}")
                if (cm.file, cm.index) not in used:
                    problems.append(f"{cm}: {key} is a relay config that no relay container runs with")
    return list(dict.fromkeys(problems))


def _check_file_sd(
    docs: Sequence[Doc], doc: Doc, spec: dict[str, Any], c: dict[str, Any], pattern: str, where: str
) -> list[str]:
    """A file_sd pattern lies in a mount that something fills: a ConfigMap's keys or an init container."""
    folder = posixpath.dirname(pattern)
    found = mount_volume(spec, c, posixpath.normpath(folder))
    if found is None or any(ch in folder for ch in "*?["):
        return [f"{where}: file_sd {pattern}: its folder is not a mounted volume"]
    mount, inside = found
    vol = volume(spec, mount["name"]) or {}
    name_pattern = posixpath.normpath(posixpath.join(inside, posixpath.basename(pattern)))
    if "configMap" in vol:
        cm = find(docs, "ConfigMap", doc.namespace, vol["configMap"].get("name", ""), doc)
        data = (cm.body.get("data") or {}) if cm is not None else {}
        keys = [k for k in data if fnmatch.fnmatch(k, name_pattern)]
        if not keys:
            return [f"{where}: file_sd {pattern}: no key of the mounted ConfigMap matches"]
        problems = []
        for key in keys:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / key
                path.write_text(data[key], encoding="utf-8")
                try:
                    read_file_sd(str(path))
                except DiscoveryError as exc:
                    problems.append(f"{where}: file_sd {cm}:{key}: {str(exc).replace(str(path), key)}")
        return problems
    if "emptyDir" in vol:
        writers = [i for i in spec.get("initContainers", []) if any(m["name"] == mount["name"] for m in i.get("volumeMounts", []))]
        if not writers:
            return [f"{where}: file_sd {pattern}: emptyDir {mount['name']!r} is filled by no init container"]
    return []


# (API group, resource) of a role or object kind, from the relay's own table: "/api/v1" is the core
# group "", "/apis/discovery.k8s.io/v1" the group discovery.k8s.io.
def api_resource(kind: str) -> tuple[str, str]:
    path, resource, _namespaced = RESOURCES[kind]
    return ("" if path == "/api/v1" else path.split("/")[2]), resource


def kubernetes_needs(sd: KubernetesSDConfig) -> list[tuple[str, str]]:
    """What one kubernetes_sd_configs entry lists and watches, as the relay's discovery does:
    its role's objects, the Services and Pods that endpoints/endpointslice join, and the nodes or
    namespaces that attach_metadata adds."""
    kinds = [sd.role]
    if sd.role in ("endpoints", "endpointslice"):
        kinds += ["service", "pod"]
    if sd.attach_node and sd.role != "node":
        kinds.append("node")
    if sd.attach_namespace and sd.role != "node":
        kinds.append("namespace")
    return [api_resource(k) for k in kinds]


RBAC_VERBS = ("get", "list", "watch")


def granted_verbs(docs: Sequence[Doc], namespace: str, service_account: str, group: str, resource: str) -> set[str]:
    """Verbs on (group, resource) in every namespace that ClusterRoleBindings in deploy/ give the
    ServiceAccount namespace/service_account."""
    verbs: set[str] = set()
    for binding in docs:
        if binding.kind != "ClusterRoleBinding":
            continue
        subjects = binding.body.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account
                   and s.get("namespace") == namespace for s in subjects):
            continue
        ref = binding.body.get("roleRef") or {}
        role = next((d for d in docs if d.kind == ref.get("kind") == "ClusterRole" and d.name == ref.get("name")), None)
        for rule in (role.body.get("rules") or []) if role is not None else []:
            if {group, "*"} & set(rule.get("apiGroups") or []) and {resource, "*"} & set(rule.get("resources") or []):
                verbs |= set(rule.get("verbs") or [])
    return {v for v in RBAC_VERBS if v in verbs or "*" in verbs}


def check_kubernetes_sd(docs: Sequence[Doc]) -> list[str]:
    """A relay that runs kubernetes_sd_configs in-cluster has its token mounted, and its
    ServiceAccount may get, list and watch every resource its roles read (RBAC)."""
    problems = []
    for doc, spec, c, _pod, args in relay_runs(docs):
        found = relay_config(docs, doc, spec, c, args)
        if found is None:
            continue
        try:
            config = parse_relay_config(*found, args)
        except ConfigError:
            continue  # reported by check_relay_configs
        in_cluster = [(sc.job_name, sd) for sc in config.scrape_configs for sd in sc.kubernetes_sd_configs
                      if sd.api_server is None and sd.kubeconfig_file is None]
        if not in_cluster:
            continue
        sa = str(spec.get("serviceAccountName", "default"))
        sa_doc = find(docs, "ServiceAccount", doc.namespace, sa, doc)
        automount = spec.get("automountServiceAccountToken")
        if automount is None and sa_doc is not None:
            automount = sa_doc.body.get("automountServiceAccountToken")
        if automount is False:
            problems.append(f"{doc}: kubernetes_sd_configs in-cluster needs the service-account token, "
                            "but automountServiceAccountToken is false")
        for job, sd in in_cluster:
            for group, resource in kubernetes_needs(sd):
                missing = [v for v in RBAC_VERBS if v not in granted_verbs(docs, doc.namespace, sa, group, resource)]
                if missing:
                    problems.append(f"{doc}: job {job} (kubernetes_sd_configs role {sd.role}): ServiceAccount "
                                    f"{doc.namespace}/{sa} may not {'/'.join(missing)} "
                                    f"{resource}{'.' + group if group else ''}: no ClusterRole bound to it grants it")
    return list(dict.fromkeys(problems))


def check_security(docs: Sequence[Doc]) -> list[str]:
    problems = []
    for doc, spec in workloads(docs):
        pod_sc = spec.get("securityContext") or {}
        for c in all_containers(spec):
            sc = c.get("securityContext") or {}
            where = f"{doc}: container {c['name']}"
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem must be true")
            caps = sc.get("capabilities") or {}
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{where}: capabilities must drop ALL and add none")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            if non_root is not True and doc.file not in ROOT_ALLOWED:
                problems.append(f"{where}: runAsNonRoot must be true (or the file listed in ROOT_ALLOWED)")
    return problems


def check_resources(docs: Sequence[Doc]) -> list[str]:
    problems = []
    for doc, spec in workloads(docs):
        for c in all_containers(spec):
            res = c.get("resources") or {}
            for part, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
                if key not in (res.get(part) or {}):
                    problems.append(f"{doc}: container {c['name']}: no resources.{part}.{key}")
    return problems


def check_images(docs: Sequence[Doc]) -> list[str]:
    """The relay image's tag is the package version (deploy/Dockerfile builds it from this repo)."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    problems = []
    for doc, spec in workloads(docs):
        for c in all_containers(spec):
            if is_relay_image(c) and c["image"] != f"{RELAY_IMAGE}:{version}":
                problems.append(f"{doc}: container {c['name']}: image {c['image']}, not {RELAY_IMAGE}:{version}")
    return problems


CHECKS: list[Check] = [
    check_identity,
    check_namespaces,
    check_selectors,
    check_service_accounts,
    check_probes,
    check_volumes,
    check_relay_command,
    check_relay_configs,
    check_kubernetes_sd,
    check_security,
    check_resources,
    check_images,
]


def run_checks(docs: Sequence[Doc]) -> list[str]:
    return [p for check in CHECKS for p in check(docs)]


# -- tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return load_docs()


def test_the_three_modes_are_there(docs: list[Doc]) -> None:
    kinds = {(d.file.split("/", 1)[0], d.kind) for d in docs}
    assert {("daemonset", "DaemonSet"), ("sidecar", "StatefulSet"), ("statefulset", "StatefulSet")} <= kinds
    for doc, spec in workloads(docs):
        assert relay_containers(spec), f"{doc}: no relay container"


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_deploy_passes(docs: list[Doc], check: Check) -> None:
    assert check(docs) == []


def test_statefulset_gives_every_replica_its_own_shard(docs: list[Doc]) -> None:
    """Replica i of N runs with --cluster.member-num i --cluster.members-count N, for every i."""
    seen = {}
    for doc, _spec, _c, pod, args in relay_runs(docs):
        if doc.file.startswith("statefulset/"):
            seen[pod] = (args.member_num, args.members_count)
    n = len(seen)
    assert n >= 2
    assert sorted(seen.values()) == [(i, n) for i in range(n)]


def test_daemonset_listens_on_the_node_ip(docs: list[Doc]) -> None:
    """On hostNetwork kubelet probes the node's IP: the relay must listen there, not on loopback."""
    for doc, spec, c, _pod, args in relay_runs(docs):
        if doc.kind == "DaemonSet":
            assert spec["hostNetwork"] is True
            assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
            ref = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
            assert "--listen=$(HOST_IP):9091" in c["args"]
            assert ref["HOST_IP"] == "status.hostIP"
            assert parse_listen(args.listen) == ("10.0.0.1", 9091)


def test_dockerfile(docs: list[Doc]) -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert stages and all(s == "python:3.11-slim" for s in stages)
    assert "pip install" in text and "COPY relay " in text
    assert "import relay._series_c, relay.textparse._text_c, relay.remote._encode_c, relay.health._kernel_c" in text, "the build must fail without the C twins"
    assert re.search(r'^ENTRYPOINT \["relay"\]$', text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\d+)", text, re.MULTILINE)
    assert users and int(users[-1]) != 0, "the image must end with a numeric non-root USER"
    for doc, spec in workloads(docs):
        uid = (spec.get("securityContext") or {}).get("runAsUser")
        if any(is_relay_image(c) for c in all_containers(spec)) and uid not in (None, 0):
            assert uid == int(users[-1]), f"{doc}: runAsUser {uid} is not the image's user {users[-1]}"


def _doc(docs: list[Doc], file: str, kind: str) -> Doc:
    return next(d for d in docs if d.file == file and d.kind == kind)


def _pod(docs: list[Doc], file: str, kind: str) -> dict[str, Any]:
    spec = pod_spec(_doc(docs, file, kind))
    assert spec is not None
    return spec


def _relay(docs: list[Doc], file: str, kind: str) -> dict[str, Any]:
    return relay_containers(_pod(docs, file, kind))[0]


def _config_map(docs: list[Doc], file: str, name: str) -> dict[str, str]:
    data: dict[str, str] = next(d for d in docs if d.file == file and d.name == name and d.kind == "ConfigMap").body["data"]
    return data


def _edit(docs: list[Doc], file: str, config_map: str, key: str, old: str, new: str) -> None:
    data = _config_map(docs, file, config_map)
    assert old in data[key]
    data[key] = data[key].replace(old, new, 1)


def _set_arg(container: dict[str, Any], prefix: str, new: str) -> None:
    if container.get("command", [None])[0] in ("sh", "/bin/sh"):
        container["args"][0] = re.sub(re.escape(prefix) + r"\S*", new, container["args"][0])
    else:
        container["args"] = [new if a.startswith(prefix) else a for a in container["args"]]


def _token_off_in_service_account(docs: list[Doc]) -> None:
    _pod(docs, STS, "StatefulSet").pop("automountServiceAccountToken")
    _doc(docs, STS, "ServiceAccount").body.update(automountServiceAccountToken=False)


def _attach_node_without_grant(docs: list[Doc]) -> None:
    _doc(docs, STS, "ClusterRole").body["rules"][0]["resources"].remove("nodes")
    _edit(docs, STS, "etcd-metrics-relay", "relay.yml", "- role: endpoints", "- role: endpoints\n        attach_metadata: {node: true}")


DS, DS_TLS, SIDECAR, STS = "daemonset/relay.yaml", "daemonset/tls/relay.yaml", "sidecar/etcd.yaml", "statefulset/relay.yaml"

BREAKS: list[tuple[str, Callable[[list[Doc]], None], str]] = [
    ("no-name", lambda d: d[0].body["metadata"].pop("name"), "no metadata.name"),
    ("no-app-label", lambda d: _doc(d, STS, "Service").body["metadata"]["labels"].pop(APP_LABEL), APP_LABEL),
    ("unknown-namespace", lambda d: _doc(d, STS, "StatefulSet").body["metadata"].update(namespace="monitoring"),
     "namespace 'monitoring'"),
    ("probe-port-undeclared", lambda d: _relay(d, DS, "DaemonSet")["readinessProbe"]["httpGet"].update(port="web"),
     "readinessProbe port 'web' is not declared"),
    ("probe-wrong-path", lambda d: _relay(d, SIDECAR, "StatefulSet")["livenessProbe"]["httpGet"].update(path="/healthz"),
     "livenessProbe must be httpGet /-/healthy"),
    ("mount-undeclared", lambda d: _relay(d, STS, "StatefulSet")["volumeMounts"][0].update(name="cfg"),
     "mounts 'cfg', which is not a volume"),
    ("configmap-missing", lambda d: _pod(d, DS, "DaemonSet")["volumes"][0]["configMap"].update(name="relay"),
     "ConfigMap 'relay' is not in deploy/"),
    ("secret-missing", lambda d: _pod(d, STS, "StatefulSet")["volumes"][2]["secret"].update(secretName="etcd-tls"),
     "Secret 'etcd-tls' is neither in deploy/"),
    ("config-outside-mounts", lambda d: _set_arg(_relay(d, DS, "DaemonSet"), "--config=", "--config=/etc/relay.yml"),
     "--config /etc/relay.yml is not in a mounted volume"),
    ("config-key-missing", lambda d: _set_arg(_relay(d, STS, "StatefulSet"), "--config=", "--config=/etc/relay/config/x.yml"),
     "has no key 'x.yml'"),
    ("listen-port-not-probe-port", lambda d: _set_arg(_relay(d, STS, "StatefulSet"), "--listen=", "--listen=0.0.0.0:9092"),
     "--listen port 9092 is not the livenessProbe port 9091"),
    ("listen-loopback", lambda d: _set_arg(_relay(d, DS_TLS, "DaemonSet"), "--listen=", "--listen=127.0.0.1:9091"),
     "is loopback"),
    ("undefined-env", lambda d: _relay(d, DS, "DaemonSet").pop("env"), "$(HOST_IP) is not a declared env var"),
    ("unknown-flag", lambda d: _relay(d, SIDECAR, "StatefulSet")["args"].append("--queue-size=1"), "unrecognized arguments"),
    ("replicas-not-members-count", lambda d: _doc(d, STS, "StatefulSet").body["spec"].update(replicas=4),
     "--cluster.members-count 3 but replicas is 4"),
    ("fixed-member-num", lambda d: _set_arg(_relay(d, STS, "StatefulSet"), "--cluster.member-num=", "--cluster.member-num=0"),
     "gets --cluster.member-num 0, not its ordinal"),
    ("queue-dir-not-persistent", lambda d: _set_arg(_relay(d, STS, "StatefulSet"), "--queue-dir=", "--queue-dir=/tmp/q"),
     "--queue-dir /tmp/q is not in a writable mounted volume"),
    ("selector-mismatch", lambda d: _doc(d, DS, "DaemonSet").body["spec"]["selector"]["matchLabels"].update(
        {"app.kubernetes.io/component": "agent"}), "does not match the pod template's labels"),
    ("service-selects-nothing", lambda d: _doc(d, STS, "Service").body["spec"]["selector"].update(
        {APP_LABEL: "relay"}), "matches no pod template"),
    ("service-account-missing", lambda d: _pod(d, SIDECAR, "StatefulSet").update(serviceAccountName="etcd-sa"),
     "serviceAccountName 'etcd-sa' is not a ServiceAccount"),
    ("invalid-relay-config", lambda d: _edit(d, STS, "etcd-metrics-relay", "relay.yml", "scrape_interval", "scrape_intervall"),
     "global.scrape_intervall: unknown key"),
    ("tls-file-not-mounted", lambda d: _edit(d, DS_TLS, "etcd-metrics-relay", "relay.yml", "/etc/kubernetes/pki/etcd/ca.crt", "/etc/ssl/ca.crt"),
     "reads /etc/ssl/ca.crt, which is not in a mounted volume"),
    ("daemonset-config-invalid", lambda d: _edit(d, DS, "etcd-metrics-relay", "relay.yml", "job_name: etcd", "job_name: ''"),
     "job_name: is required"),
    ("tls-hostpath-not-mounted", lambda d: _relay(d, DS_TLS, "DaemonSet")["volumeMounts"].pop(),
     "reads /etc/kubernetes/pki/etcd/healthcheck-client.key"),
    ("file-sd-no-key", lambda d: _edit(d, STS, "etcd-metrics-relay", "relay.yml", "targets/*.json", "targets/*.yml"),
     "no key of the mounted ConfigMap matches"),
    ("file-sd-bad-json", lambda d: _config_map(d, STS, "etcd-metrics-relay-targets").update({"etcd.json": '{"targets": []}'}),
     "must be a list of target groups"),
    ("file-sd-nobody-writes", lambda d: _pod(d, SIDECAR, "StatefulSet").pop("initContainers"),
     "is filled by no init container"),
    ("capabilities-kept", lambda d: _relay(d, STS, "StatefulSet")["securityContext"].pop("capabilities"),
     "capabilities must drop ALL"),
    ("root", lambda d: _pod(d, DS, "DaemonSet")["securityContext"].pop("runAsNonRoot"),
     "runAsNonRoot must be true"),
    ("no-memory-limit", lambda d: _relay(d, DS, "DaemonSet")["resources"]["limits"].pop("memory"), "no resources.limits.memory"),
    ("wrong-image-tag", lambda d: _relay(d, SIDECAR, "StatefulSet").update(image="etcd-metrics-relay:latest"),
     "image etcd-metrics-relay:latest"),
    ("token-not-mounted", lambda d: _pod(d, STS, "StatefulSet").update(automountServiceAccountToken=False),
     "automountServiceAccountToken is false"),
    ("token-not-mounted-by-sa", _token_off_in_service_account, "automountServiceAccountToken is false"),
    ("rbac-no-watch", lambda d: _doc(d, STS, "ClusterRole").body["rules"][0]["verbs"].remove("watch"),
     "may not watch endpoints: no ClusterRole"),
    ("rbac-no-pods", lambda d: _doc(d, STS, "ClusterRole").body["rules"][0]["resources"].remove("pods"),
     "may not get/list/watch pods"),
    ("rbac-binding-other-sa", lambda d: _doc(d, STS, "ClusterRoleBinding").body["subjects"][0].update(name="default"),
     "ServiceAccount etcd-metrics-relay/etcd-metrics-relay may not get/list/watch endpoints"),
    ("rbac-binding-other-role", lambda d: _doc(d, STS, "ClusterRoleBinding").body["roleRef"].update(name="view"),
     "may not get/list/watch services"),
    ("rbac-attach-node", _attach_node_without_grant, "may not get/list/watch nodes"),
    ("etcd-service-selects-nothing", lambda d: _doc(d, "etcd-service.yaml", "Service").body["spec"]["selector"].update(
        component="etcd-server"), "matches no pod template in namespace 'kube-system'"),
    ("duplicate-in-folder", lambda d: d.append(copy.deepcopy(_doc(d, STS, "ConfigMap"))), "same kind, namespace and name"),
]


@pytest.mark.parametrize(("mutate", "expected"), [b[1:] for b in BREAKS], ids=[b[0] for b in BREAKS])
def test_a_broken_copy_is_caught(docs: list[Doc], mutate: Callable[[list[Doc]], None], expected: str) -> None:
    """Each check finds what it is there to find: break one thing in a copy, expect that problem."""
    broken = copy.deepcopy(docs)
    mutate(broken)
    problems = run_checks(broken)
    assert any(expected in p for p in problems), f"expected {expected!r} among {problems}"


def test_a_broken_file_on_disk_is_caught(tmp_path: Path) -> None:
    """The whole path, from files on disk: a copy of deploy/ with one manifest broken fails."""
    import shutil

    shutil.copytree(DEPLOY, tmp_path / "deploy")
    manifest = tmp_path / "deploy" / STS
    text = manifest.read_text(encoding="utf-8")
    assert "--cluster.members-count=3" in text
    manifest.write_text(text.replace("--cluster.members-count=3", "--cluster.members-count=2"), encoding="utf-8")
    problems = run_checks(load_docs(tmp_path / "deploy"))
    assert any("--cluster.members-count 2 but replicas is 3" in p for p in problems), problems


def _sts_config(docs: list[Doc]) -> Config:
    doc = _doc(docs, STS, "StatefulSet")
    spec = _pod(docs, STS, "StatefulSet")
    runs = [r for r in relay_runs(docs) if r[0] is doc]
    assert runs, "the StatefulSet's relay command does not parse"
    _, _spec, c, _pod_name, args = runs[0]
    found = relay_config(docs, doc, spec, c, args)
    assert found is not None
    return parse_relay_config(*found, args)


def test_statefulset_runs_the_kubeadm_config(docs: list[Doc]) -> None:
    """By default the central collector scrapes kube-system/etcd's endpoints (issue 13's config)."""
    config = _sts_config(docs)
    jobs = {sc.job_name: sc for sc in config.scrape_configs}
    etcd = jobs["etcd"]
    assert [(sd.role, sd.api_server, sd.kubeconfig_file) for sd in etcd.kubernetes_sd_configs] == [("endpoints", None, None)]
    assert etcd.scheme == "http"
    keep = [r for r in etcd.relabel_configs if r.action == "keep"]
    assert [(r.source_labels, r.regex_source) for r in keep] == [(
        ("__meta_kubernetes_namespace", "__meta_kubernetes_service_name", "__meta_kubernetes_endpoint_port_name"),
        "kube-system;etcd;http",
    )]
    # Sharding and remote write as before.
    assert config.remote_write and config.remote_write[0].url.endswith("/api/v1/write")


def test_statefulset_clusterrole_reads_every_role(docs: list[Doc]) -> None:
    """The ServiceAccount may get/list/watch what role endpoints reads, and what every other role
    reads too: the config's role swapped for each of Prometheus' roles passes the RBAC check."""
    config = _sts_config(docs)
    needed = {res for sc in config.scrape_configs for sd in sc.kubernetes_sd_configs for res in kubernetes_needs(sd)}
    assert needed == {("", "endpoints"), ("", "services"), ("", "pods")}
    sa = _pod(docs, STS, "StatefulSet")["serviceAccountName"]
    for group, resource in needed | {("discovery.k8s.io", "endpointslices"), ("", "nodes"), ("networking.k8s.io", "ingresses")}:
        assert granted_verbs(docs, "etcd-metrics-relay", sa, group, resource) == set(RBAC_VERBS), (group, resource)
    for role in K8S_ROLES:
        variant = copy.deepcopy(docs)
        _edit(variant, STS, "etcd-metrics-relay", "relay.yml", "- role: endpoints", f"- role: {role}")
        assert check_kubernetes_sd(variant) == [], role
    # Nothing more than reading.
    for rule in _doc(docs, STS, "ClusterRole").body["rules"]:
        assert sorted(rule["verbs"]) == sorted(RBAC_VERBS)


def test_statefulset_binding_names_its_service_account(docs: list[Doc]) -> None:
    spec = _pod(docs, STS, "StatefulSet")
    sts = _doc(docs, STS, "StatefulSet")
    binding = _doc(docs, STS, "ClusterRoleBinding").body
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": _doc(docs, STS, "ClusterRole").name}
    assert {"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": sts.namespace} in binding["subjects"]
    assert spec.get("automountServiceAccountToken") is not False
    assert _doc(docs, STS, "ServiceAccount").body.get("automountServiceAccountToken") is not False


def test_etcd_service_is_headless_on_the_metrics_port(docs: list[Doc]) -> None:
    """deploy/etcd-service.yaml: what the keep rule kube-system;etcd;http matches."""
    svc = _doc(docs, "etcd-service.yaml", "Service")
    assert (svc.namespace, svc.name) == ("kube-system", "etcd")
    spec = svc.body["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["selector"] == {"component": "etcd"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]] == [("http", 2381, 2381)]
    assert subset(spec["selector"], EXTERNAL_PODS["kube-system"][0])


def test_readme_shows_the_config_the_statefulset_runs(docs: list[Doc]) -> None:
    """README: the kubeadm job shown under "Discovery in Kubernetes" is the StatefulSet's job etcd,
    and "Central collection in Kubernetes" applies the two manifests and says why 2381 may be shut."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("### Discovery in Kubernetes", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    shown = {sc.job_name: sc for sc in parse_config("scrape_configs:\n" + block, source="README.md").scrape_configs}
    runs = {sc.job_name: sc for sc in _sts_config(docs).scrape_configs}
    for attr in ("kubernetes_sd_configs", "scheme", "metrics_path", "relabel_configs"):  # not global's intervals
        assert getattr(shown["etcd"], attr) == getattr(runs["etcd"], attr), attr
    section = readme.split("### Central collection in Kubernetes", 1)[1].split("\n## ", 1)[0]
    assert "kubectl apply -f deploy/etcd-service.yaml -f deploy/statefulset/relay.yaml" in section
    assert "127.0.0.1:2381" in section and "listen-metrics-urls" in section
