"""Server-rendered HTML pages of the relay's web endpoints (no scripts; everything escaped).

``/service-discovery``: per job, what each discovery mechanism says is wrong now, and every
discovered target's labels before relabeling beside what relabeling made of it (kept, dropped,
another member's, or an error), so that an operator can see why a keep rule matched nothing.
A job shows at most :data:`PAGE_SIZE` targets at once; ``?scrapePool=JOB&offset=N`` pages on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode

from ..scrape import DiscoveredTarget

__all__ = ["PAGE_SIZE", "JobDiscovery", "service_discovery_html"]

PAGE_SIZE = 500

_STYLE = (
    "body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1em}"
    "td,th{padding:2px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #ddd}"
    ".active{color:#2a2}.dropped{color:#888}.error{color:#c22}.err{color:#c22}"
    "code{white-space:pre-wrap;font-size:90%}"
)


@dataclass(frozen=True)
class JobDiscovery:
    """One job's part of the page."""

    name: str
    providers: Sequence[tuple[str, str | None]]  # (mechanism, current error or None)
    targets: Sequence[DiscoveredTarget]  # the shown slice
    total: int  # discovered targets of the job (all, not just the slice)
    offset: int
    counts: dict[str, int]  # state -> number among all the job's targets


def _labels(labels: dict[str, str] | tuple[tuple[str, str], ...]) -> str:
    items = sorted(labels.items()) if isinstance(labels, dict) else labels
    return "<br>".join(f"{escape(k)}=&quot;{escape(v)}&quot;" for k, v in items)


def _link(job: str, offset: int, text: str) -> str:
    return f"<a href='/service-discovery?{escape(urlencode({'scrapePool': job, 'offset': offset}))}'>{escape(text)}</a>"


def _job(j: JobDiscovery) -> str:
    parts = [f"<h2 id='{escape(j.name)}'>{escape(j.name)}</h2>"]
    summary = ", ".join(f"{n} {escape(state)}" for state, n in sorted(j.counts.items()))
    parts.append(f"<p>{j.total} discovered" + (f": {summary}" if summary else "") + "</p>")
    if j.providers:
        prow = "".join(
            f"<tr><td>{escape(mech)}</td>"
            + (f"<td class='err'>{escape(err)}</td>" if err else "<td class='active'>ok</td>") + "</tr>"
            for mech, err in j.providers
        )
        parts.append(f"<table><tr><th>Discovery</th><th>State</th></tr>{prow}</table>")
    if j.targets:
        rows = []
        for t in j.targets:
            if t.state == "error":
                after = f"<span class='error'>{escape(t.error)}</span>"
            elif t.target is None:
                after = "dropped by relabel_configs"
            else:
                after = _labels(t.target.labels)
            rows.append(f"<tr><td><code>{_labels(t.discovered)}</code></td>"
                        f"<td class='{escape(t.state.split()[0])}'>{escape(t.state)}</td><td><code>{after}</code></td></tr>")
        parts.append("<table><tr><th>Discovered labels</th><th>State</th><th>Target labels</th></tr>"
                     + "".join(rows) + "</table>")
        end = j.offset + len(j.targets)
        nav = [f"targets {j.offset + 1}-{end} of {j.total}"]
        if j.offset > 0:
            nav.append(_link(j.name, max(0, j.offset - PAGE_SIZE), "previous"))
        if end < j.total:
            nav.append(_link(j.name, end, "next"))
        parts.append("<p>" + " &middot; ".join(nav) + "</p>")
    elif j.total and j.offset >= j.total:
        parts.append(f"<p>offset {j.offset} is past the last target ({j.total}); {_link(j.name, 0, 'first')}</p>")
    return "".join(parts)


def service_discovery_html(jobs: Sequence[JobDiscovery]) -> bytes:
    index = " ".join(f"<a href='#{escape(j.name)}'>{escape(j.name)}</a>" for j in jobs)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>relay service discovery</title>"
        f"<style>{_STYLE}</style></head><body><h1>Service discovery</h1>"
        f"<p>{len(jobs)} jobs: {index} &middot; <a href='/targets?format=html'>targets</a></p>"
        + "".join(_job(j) for j in jobs)
        + "</body></html>"
    )
    return page.encode()
