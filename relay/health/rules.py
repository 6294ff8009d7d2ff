"""The rule table: the etcd mixin's alerts (names, severities, ``for``, labels, annotations read
from the bundled ``etcd-mixin-alerts.yaml``, the etcd project's file unchanged) plus the two the
mixin lacks, each tied to the typed function that evaluates its expression, with its window and
threshold; ``etcd_health.overrides`` change ``for``, window and threshold per rule.

How an override's ``window`` maps onto each rule is ``../shared/etcd-mixin/README.md``'s table:
the ``[5m]`` of rates, quantiles and ``last_over_time``; the ``[15m]`` of failed proposals; the
``[15m:1m]`` leader-change subquery with its step = window / 15; the ``[120s]`` of peer failures;
the ``[4h]`` fitted range of the growth prediction (its 4 h horizon stays).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MIXIN_FILE", "Override", "Rule", "apply_overrides", "default_rules", "expand_template", "go_float"]

MIXIN_FILE = Path(__file__).with_name("etcd-mixin-alerts.yaml")


@dataclass(frozen=True)
class Override:
    alert: str
    severity: str | None = None
    for_s: float | None = None
    window_s: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Rule:
    alert: str
    severity: str
    kind: str  # the evaluating function (relay.health.engine)
    for_s: float
    window_s: float | None  # None: the expression has no range
    threshold: float | None  # None: no numeric threshold
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    needs: tuple[str, ...]  # the kept signals the expression reads: without them, not evaluable
    per_member: bool


# (alert, severity) -> (kind, window seconds, threshold, needs, per_member): the expression's shape.
_SHAPES: dict[tuple[str, str], tuple[str, float | None, float | None, tuple[str, ...], bool]] = {
    ("etcdMembersDown", "warning"): ("members_down", 120.0, None, ("up",), False),
    ("etcdInsufficientMembers", "critical"): ("insufficient_members", None, None, ("up",), False),
    ("etcdNoLeader", "critical"): ("no_leader", None, None, ("has_leader",), True),
    ("etcdHighNumberOfLeaderChanges", "warning"): ("leader_changes", 900.0, 4.0, ("leader_changes",), False),
    ("etcdHighNumberOfFailedGRPCRequests", "warning"): ("failed_grpc", 300.0, 1.0, ("grpc_all",), True),
    ("etcdHighNumberOfFailedGRPCRequests", "critical"): ("failed_grpc", 300.0, 5.0, ("grpc_all",), True),
    ("etcdGRPCRequestsSlow", "critical"): ("grpc_slow", 300.0, 0.15, ("grpc_slow",), True),
    ("etcdMemberCommunicationSlow", "warning"): ("peer_slow", 300.0, 0.15, ("rtt",), True),
    ("etcdHighNumberOfFailedProposals", "warning"): ("failed_proposals", 900.0, 5.0, ("proposals_failed",), True),
    ("etcdHighFsyncDurations", "warning"): ("fsync", 300.0, 0.5, ("fsync",), True),
    ("etcdHighFsyncDurations", "critical"): ("fsync", 300.0, 1.0, ("fsync",), True),
    ("etcdHighCommitDurations", "warning"): ("commit", 300.0, 0.25, ("commit",), True),
    ("etcdDatabaseQuotaLowSpace", "critical"): ("quota", 300.0, 95.0, ("db_total", "quota"), True),
    ("etcdExcessiveDatabaseGrowth", "warning"): ("growth", 14400.0, None, ("db_total", "quota"), True),
    ("etcdDatabaseHighFragmentationRatio", "warning"): ("fragmentation", 300.0, 0.5, ("db_in_use", "db_total"), True),
}

# What the mixin lacks (ours): same form as the file's rules.
_EXTRA: tuple[dict[str, Any], ...] = (
    {
        "alert": "etcdMultipleLeaders",
        "for": "1m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "etcd cluster has more than one leader.",
            "description": 'etcd cluster "{{ $labels.job }}": {{ $value }} members say they are the leader.',
        },
        "shape": ("multiple_leaders", None, None, ("is_leader",), False),
    },
    {
        "alert": "etcdMixedVersions",
        "for": "15m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "etcd cluster members run different server versions.",
            "description": 'etcd cluster "{{ $labels.job }}": members run {{ $value }} different server versions.',
        },
        "shape": ("mixed_versions", None, None, ("version",), False),
    },
)


def _duration(text: str) -> float:
    from ..config import parse_duration

    return parse_duration(text, "rule for")


def _rule(raw: Mapping[str, Any], shape: tuple[str, float | None, float | None, tuple[str, ...], bool]) -> Rule:
    labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
    kind, window, threshold, needs, per_member = shape
    return Rule(
        alert=str(raw["alert"]),
        severity=labels.get("severity", ""),
        kind=kind,
        for_s=_duration(str(raw.get("for", "0s"))),
        window_s=window,
        threshold=threshold,
        labels=tuple(sorted(labels.items())),
        annotations=tuple(sorted((str(k), str(v)) for k, v in (raw.get("annotations") or {}).items())),
        needs=needs,
        per_member=per_member,
    )


def default_rules() -> list[Rule]:
    """The mixin's 15 rules from the bundled file, then etcdMultipleLeaders and etcdMixedVersions."""
    doc = yaml.safe_load(MIXIN_FILE.read_text(encoding="utf-8"))
    out = []
    for raw in doc["groups"][0]["rules"]:
        severity = str((raw.get("labels") or {}).get("severity", ""))
        shape = _SHAPES.get((str(raw["alert"]), severity))
        if shape is None:
            raise ValueError(f"{MIXIN_FILE.name}: rule {raw['alert']} ({severity}) has no evaluator")
        out.append(_rule(raw, shape))
    out += [_rule(raw, raw["shape"]) for raw in _EXTRA]
    return out


def apply_overrides(rules: Sequence[Rule], overrides: Sequence[Override], where: str = "etcd_health.overrides") -> list[Rule]:
    """The rules with each override applied; ValueError (one line, naming the override) on a bad one."""
    out = list(rules)
    for i, o in enumerate(overrides):
        hits = [k for k, r in enumerate(out) if r.alert == o.alert and (o.severity is None or r.severity == o.severity)]
        if not hits:
            known = sorted({r.alert for r in out})
            if any(r.alert == o.alert for r in out):
                raise ValueError(f"{where}[{i}]: {o.alert} has no severity {o.severity!r}")
            raise ValueError(f"{where}[{i}]: no alert {o.alert!r} (known: {', '.join(known)})")
        for k in hits:
            r = out[k]
            if o.window_s is not None and r.window_s is None:
                raise ValueError(f"{where}[{i}]: {o.alert} has no range to set a window for")
            if o.threshold is not None and r.threshold is None:
                raise ValueError(f"{where}[{i}]: {o.alert} has no numeric threshold")
            out[k] = replace(
                r,
                for_s=r.for_s if o.for_s is None else o.for_s,
                window_s=r.window_s if o.window_s is None else o.window_s,
                threshold=r.threshold if o.threshold is None else o.threshold,
            )
    return out


def go_float(value: float) -> str:
    """A float as Go's ``%v`` / ``strconv.FormatFloat(v, 'g', -1, 64)`` prints it."""
    from ..devtools.sim import render_go_float

    return render_go_float(value).decode()


_TEMPLATE = re.compile(r"\{\{\s*\$(labels\.([A-Za-z_][A-Za-z0-9_]*)|value)\s*(\|\s*humanizePercentage\s*)?\}\}")


def expand_template(text: str, labels: Mapping[str, str], value: float) -> str:
    """The annotation templates the rules use: ``{{ $labels.x }}``, ``{{ $value }}`` and
    ``{{ $value | humanizePercentage }}`` (as Prometheus' ``%.4g%%``)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            return labels.get(m.group(2), "<no value>")
        if m.group(3):
            return _go_g4(value * 100) + "%"
        return go_float(value)

    return _TEMPLATE.sub(sub, text)


def _go_g4(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.4g}"
