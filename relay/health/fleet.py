"""The health outputs: ``/api/v1/alerts`` (Prometheus' format) and the ``/fleet`` page (plain
server-rendered HTML, every value escaped)."""

from __future__ import annotations

import html
import math
import time

import orjson

from ..http.server import Response
from .engine import Cluster, HealthEngine, Member, _instant

__all__ = ["alerts_response", "fleet_response", "fleet_rows"]

_HOUR_MS = 3_600_000


def alerts_response(engine: HealthEngine | None) -> Response:
    alerts = engine.alerts_json() if engine is not None else []
    return Response(200, orjson.dumps({"status": "success", "data": {"alerts": alerts}}), "application/json")


def _leader_changes_last_hour(m: Member, at: int) -> float | None:
    log = m.leader_log
    if not log:
        return None
    before = [v for t, v in log if t <= at - _HOUR_MS]
    start = before[-1] if before else log[0][1]
    return max(0.0, log[-1][1] - start)


def fleet_rows(engine: HealthEngine, now: float | None = None) -> list[dict[str, object]]:
    """One dict per cluster: what the /fleet page shows (also handy for tests and `relay fleet`)."""
    at = int((time.time() if now is None else now) * 1000)
    rows = []
    for c in engine.clusters():
        rows.append(_row(engine, c, at))
    return rows


def _row(engine: HealthEngine, c: Cluster, at: int) -> dict[str, object]:
    ups = [_instant(m, ("up",), at) for m in c.members]
    leaders = [m.instance for m in c.members if _instant(m, ("is_leader",), at) == 1]
    changes = [x for m in c.members if (x := _leader_changes_last_hour(m, at)) is not None]
    db = [(_instant(m, ("db_total",), at), _instant(m, ("quota",), at)) for m in c.members]
    db_max = max((d for d, _ in db if d is not None), default=None)
    quota = max((q for _, q in db if q is not None), default=None)

    def worst(stat: str) -> float | None:
        vals = [v for m in c.members if (v := m.stats.get(stat)) is not None and not math.isnan(v)]
        return max(vals, default=None)

    return {
        "cluster": dict(c.key),
        "members_up": sum(1 for v in ups if v == 1),
        "members": len(c.members),
        "leader": ", ".join(leaders),
        "leader_changes_1h": max(changes, default=None),
        "db_size": db_max,
        "quota": quota,
        "p99_fsync": worst("p99_fsync"),
        "p99_commit": worst("p99_commit"),
        "firing": engine.firing(c),
        "not_evaluable": engine.not_evaluable.get(c.key, []),
    }


def _num(v: object, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if unit == "s":
            return f"{v * 1000:.1f} ms"
        if unit == "B":
            return f"{v / 2**20:.1f} MiB"
        return f"{v:g}"
    return str(v)


def fleet_response(engine: HealthEngine | None) -> Response:
    e = html.escape
    if engine is None:
        body = "<p>etcd_health is disabled in the config.</p>"
    else:
        trs = []
        for r in fleet_rows(engine):
            name = ", ".join(f"{k}={v}" for k, v in r["cluster"].items())  # type: ignore[attr-defined]
            firing = r["firing"]
            color = "#c22" if firing else ("#2a2" if r["members_up"] == r["members"] else "#c80")
            trs.append(
                f"<tr><td>{e(name)}</td><td style='color:{color}'>{r['members_up']}/{r['members']}</td>"
                f"<td>{e(str(r['leader']) or 'none')}</td><td>{e(_num(r['leader_changes_1h']))}</td>"
                f"<td>{e(_num(r['db_size'], 'B'))} / {e(_num(r['quota'], 'B'))}</td>"
                f"<td>{e(_num(r['p99_fsync'], 's'))}</td><td>{e(_num(r['p99_commit'], 's'))}</td>"
                f"<td>{e(', '.join(firing)) or 'none'}</td>"  # type: ignore[arg-type]
                f"<td>{e(', '.join(r['not_evaluable']))}</td></tr>"  # type: ignore[arg-type]
            )
        body = (
            "<table><tr><th>Cluster</th><th>Up</th><th>Leader</th><th>Leader changes (1 h)</th>"
            "<th>DB size / quota</th><th>p99 WAL fsync</th><th>p99 backend commit</th><th>Firing</th>"
            "<th>Not evaluable (metrics not exposed)</th></tr>" + "".join(trs) + "</table>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>etcd fleet</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>etcd fleet</h1>{body}</body></html>"
    )
    return Response(200, page.encode(), "text/html; charset=utf-8")
