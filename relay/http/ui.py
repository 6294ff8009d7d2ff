"""The relay's web UI: a few server-rendered pages with one navigation bar, no scripts, no assets.

    /targets?format=html   targets: health, last error, duration, samples, labels; filters by job
                           and state, a summary per job, TARGETS_PER_PAGE a page
    /service-discovery     (relay.http.pages) discovered labels before relabeling, kept or not
    /config?format=html    the loaded config, secrets as <secret>
    /status                build, runtime information and flags
    /fleet                 (relay.health.fleet) the etcd clusters, when etcd_health is on

Every value shown is escaped; the pages are sent with a Content-Security-Policy that allows no
script and no external resource (inline style only), and X-Content-Type-Options: nosniff.
Filters are plain GET forms and links, so the pages work in any browser and in curl.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

__all__ = ["NAV", "TARGETS_PER_PAGE", "config_page", "page", "status_page", "targets_page", "with_nav"]

#: the pages of the navigation bar: (path with query, title, the path it is active on)
NAV: tuple[tuple[str, str, str], ...] = (
    ("/targets?format=html", "Targets", "/targets"),
    ("/service-discovery", "Service discovery", "/service-discovery"),
    ("/config?format=html", "Config", "/config"),
    ("/status", "Status", "/status"),
    ("/fleet", "etcd fleet", "/fleet"),
    ("/metrics", "Metrics", "/metrics"),
)
TARGETS_PER_PAGE = 500
_STATES = ("any", "up", "down", "unknown")

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:0;color:#222}"
    "nav{background:#263238;padding:6px 12px}nav a{color:#eceff1;margin-right:16px;text-decoration:none}"
    "nav a.on{font-weight:bold;border-bottom:2px solid #80cbc4}main{padding:8px 16px}"
    "table{border-collapse:collapse}td,th{padding:3px 8px;text-align:left;vertical-align:top;"
    "border-bottom:1px solid #eee}th{background:#f5f5f5}.up{color:#1b8a1b}.down{color:#c62828}"
    ".unknown{color:#888}.labels span{display:inline-block;background:#eceff1;border-radius:3px;"
    "padding:0 4px;margin:1px;font-size:90%}pre{background:#f7f7f7;padding:8px;overflow:auto}"
    "form{margin:8px 0}.err{color:#c62828;max-width:40em}"
)


def _nav(active: str) -> str:
    links = []
    for href, title, path in NAV:
        on = " class='on'" if path == active else ""
        links.append(f"<a href='{escape(href)}'{on}>{escape(title)}</a>")
    return "<nav>" + "".join(links) + "</nav>"


def page(title: str, active: str, body: str) -> bytes:
    """A whole page: head, navigation bar (``active`` marked), ``body`` (already escaped HTML)."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)} - etcd metrics relay</title><style>{_STYLE}</style></head><body>"
        f"{_nav(active)}<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    ).encode()


def with_nav(document: bytes, active: str) -> bytes:
    """A page rendered elsewhere (service discovery, fleet) with the navigation bar added."""
    head, sep, rest = document.partition(b"<body>")
    if not sep:
        return document
    style = f"<style>{_STYLE}</style>".encode()
    head = head.replace(b"</head>", style + b"</head>", 1)
    return head + sep + _nav(active).encode() + b"<main>" + rest.replace(b"</body>", b"</main></body>", 1)


def _labels(labels: Mapping[str, str]) -> str:
    return "<span class='labels'>" + "".join(
        f"<span>{escape(k)}=&quot;{escape(v)}&quot;</span>" for k, v in sorted(labels.items())) + "</span>"


def _first(query: Mapping[str, Sequence[str]], key: str, default: str = "") -> str:
    values = query.get(key)
    return values[0] if values else default


def targets_page(targets: Sequence[Mapping[str, Any]], query: Mapping[str, Sequence[str]],
                 now: float | None = None) -> bytes:
    """Targets, filtered by ``?job=`` (or ``scrapePool=``) and ``?health=`` (up, down, unknown),
    ``TARGETS_PER_PAGE`` a page (``?page=``, from 1). A bad parameter is shown, not an error page."""
    now = time.time() if now is None else now
    job = _first(query, "job") or _first(query, "scrapePool")
    health = _first(query, "health", "any").lower()
    problems = []
    if health not in _STATES:
        problems.append(f"health {health[:32]!r} is not one of {', '.join(_STATES)}: showing any")
        health = "any"
    raw_page = _first(query, "page", "1")
    number = int(raw_page) if raw_page.isdigit() and int(raw_page) >= 1 else 1
    if raw_page != str(number):
        problems.append(f"page {raw_page[:32]!r} is not a page number: showing page 1")

    jobs: dict[str, list[int]] = {}
    for t in targets:
        counts = jobs.setdefault(str(t["scrapePool"]), [0, 0])
        counts[1] += 1
        if t["health"] == "up":
            counts[0] += 1
    chosen = [t for t in targets if (not job or t["scrapePool"] == job) and (health == "any" or t["health"] == health)]
    chosen.sort(key=lambda t: (str(t["scrapePool"]), str(t["scrapeUrl"])))
    pages = max(1, -(-len(chosen) // TARGETS_PER_PAGE))
    number = min(number, pages)
    shown = chosen[(number - 1) * TARGETS_PER_PAGE : number * TARGETS_PER_PAGE]

    parts = [f"<p class='err'>{escape(p)}</p>" for p in problems]
    summary = "".join(
        f"<tr><td><a href='/targets?{escape(urlencode({'format': 'html', 'job': name}))}'>{escape(name)}</a></td>"
        f"<td class='{'up' if up == n else 'down'}'>{up}/{n} up</td></tr>"
        for name, (up, n) in sorted(jobs.items())
    )
    parts.append(f"<table id='jobs'><tr><th>Job</th><th>Health</th></tr>{summary}</table>")
    options = "".join(
        f"<option value='{escape(name)}'{' selected' if name == job else ''}>{escape(name)}</option>" for name in sorted(jobs)
    )
    states = "".join(f"<option{' selected' if s == health else ''}>{s}</option>" for s in _STATES)
    parts.append(
        "<form method='get' action='/targets'><input type='hidden' name='format' value='html'>"
        f"<label>Job <select name='job'><option value=''>all</option>{options}</select></label> "
        f"<label>State <select name='health'>{states}</select></label> <button>Filter</button></form>"
    )
    rows = []
    for t in shown:
        state = str(t["health"])
        ago = f"{now - t['lastScrapeTs']:.1f} s ago" if t.get("lastScrapeTs") else "never"
        rows.append(
            f"<tr class='target'><td>{escape(str(t['scrapeUrl']))}</td><td class='{escape(state)}'>{escape(state)}</td>"
            f"<td>{_labels(t['labels'])}</td><td>{ago}</td><td>{float(t['lastScrapeDuration']) * 1000:.1f} ms</td>"
            f"<td>{int(t['lastSamples'])}</td><td class='err'>{escape(str(t['lastError']))}</td></tr>"
        )
    parts.append(
        f"<p id='count'>{len(chosen)} targets{f' of job {escape(job)}' if job else ''}"
        f"{f', {escape(health)}' if health != 'any' else ''}; page {number} of {pages}</p>"
        "<table id='targets'><tr><th>Endpoint</th><th>State</th><th>Labels</th><th>Last scrape</th>"
        "<th>Duration</th><th>Samples</th><th>Error</th></tr>" + "".join(rows) + "</table>"
    )
    if pages > 1:
        def link(n: int, text: str) -> str:
            q = {"format": "html", "page": str(n), **({"job": job} if job else {}),
                 **({"health": health} if health != "any" else {})}
            return f"<a href='/targets?{escape(urlencode(q))}'>{text}</a>"

        nav = [link(number - 1, "previous")] if number > 1 else []
        nav += [link(number + 1, "next")] if number < pages else []
        parts.append("<p id='pages'>" + " &middot; ".join(nav) + "</p>")
    return page("Targets", "/targets", "".join(parts))


def config_page(yaml_text: str) -> bytes:
    return page("Config", "/config", f"<p>The loaded configuration (secrets as &lt;secret&gt;). "
                f"As YAML: <a href='/config'>/config</a>.</p><pre id='config'>{escape(yaml_text)}</pre>")


def _table(element_id: str, rows: Mapping[str, Any]) -> str:
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table id='{element_id}'>{body}</table>"


def status_page(build: Mapping[str, Any], runtime: Mapping[str, Any], flags: Mapping[str, Any]) -> bytes:
    return page("Status", "/status", (
        "<h2>Build</h2>" + _table("build", build)
        + "<h2>Runtime</h2>" + _table("runtime", runtime)
        + "<h2>Flags</h2>" + _table("flags", flags)
    ))
