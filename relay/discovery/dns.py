"""``dns_sd_configs``: targets from DNS records (SRV by default, A, AAAA, MX, NS), as Prometheus.

Every ``refresh_interval`` each name is looked up; each record becomes a target with the labels
Prometheus' DNS discovery sets (an empty one is left out, as Prometheus' label builder does):

    __meta_dns_name                 the name as configured
    __meta_dns_srv_record_target    SRV: the record's target, with its final dot
    __meta_dns_srv_record_port      SRV: the record's port
    __meta_dns_mx_record_target     MX: the exchange, with its final dot
    __meta_dns_ns_record_target     NS: the name server, with its final dot

The address is the record's target (final dot removed) with the SRV port, or the configured
``port`` for the other types. Names are resolved as Prometheus does, through /etc/resolv.conf
(read again on every refresh: its servers, search list and ndots), unless ``nameservers`` (ours)
names the servers to ask; names are then asked for as written.

A name whose lookup fails (timeout, SERVFAIL, no usable server) keeps the targets it had, as in
Prometheus. Unlike Prometheus, so does a name that does not exist (NXDOMAIN): a zone that lost
its records for a moment does not drop every target; a name that exists with no records of the
type (NOERROR, empty answer) has no targets, as in Prometheus. Each change of a name's state is
logged once.
"""

from __future__ import annotations

import logging

import anyio
import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from ..config import DNSSDConfig
from .base import DiscoveryError, Provider, Send, TargetGroup

__all__ = ["DNSSDProvider", "records_to_groups"]

log = logging.getLogger("relay.discovery.dns")

RESOLV_CONF = "/etc/resolv.conf"  # as Prometheus; a module attribute so that tests can point elsewhere

# The time one name's lookup may take, over every server and search name (dnspython's default 5 s).
LOOKUP_LIFETIME = 10.0


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def records_to_groups(name: str, kind: str, port: int, rdatas: list[object], source: str) -> list[TargetGroup]:
    """Target groups for the records of one answer: one group per distinct label set, in record order."""
    by_labels: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for rd in rdatas:
        labels = {"__meta_dns_name": name}
        if kind == "SRV":
            target = str(rd.target)  # type: ignore[attr-defined]
            if target == ".":
                continue  # RFC 2782: "the service is decidedly not available at this domain"
            labels["__meta_dns_srv_record_target"] = target
            labels["__meta_dns_srv_record_port"] = str(rd.port)  # type: ignore[attr-defined]
            address = _host_port(target.rstrip("."), rd.port)  # type: ignore[attr-defined]
        elif kind == "MX":
            target = str(rd.exchange)  # type: ignore[attr-defined]
            labels["__meta_dns_mx_record_target"] = target
            address = _host_port(target.rstrip("."), port)
        elif kind == "NS":
            target = str(rd.target)  # type: ignore[attr-defined]
            labels["__meta_dns_ns_record_target"] = target
            address = _host_port(target.rstrip("."), port)
        else:  # A, AAAA
            address = _host_port(str(rd.address), port)  # type: ignore[attr-defined]
        by_labels.setdefault(tuple(sorted(labels.items())), []).append(address)
    return [
        TargetGroup(source=f"{source}/{i}", targets=tuple(dict.fromkeys(addrs)), labels=labels)
        for i, (labels, addrs) in enumerate(by_labels.items())
    ]


class _Missing(Exception):
    """NXDOMAIN for every name tried: kept apart from failures only to say so in the log."""


class DNSSDProvider(Provider):
    """Looks up every name each refresh_interval; a failing name keeps its last good targets."""

    name = "dns"

    def __init__(self, config: DNSSDConfig, job: str) -> None:
        self.config = config
        self.job = job
        self.last_error: str | None = None
        self.state: dict[str, str] = {}  # name -> "" (resolved) or its current error

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self.config.nameservers:
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.config.nameservers]
        else:
            try:
                r = dns.asyncresolver.Resolver(filename=RESOLV_CONF)  # read again every refresh
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                raise DiscoveryError(f"cannot use {RESOLV_CONF}: {exc}") from None
        r.lifetime = min(LOOKUP_LIFETIME, self.config.refresh_interval)
        return r

    def _names_to_try(self, resolver: dns.asyncresolver.Resolver, name: str) -> list[dns.name.Name]:
        """The search list applied as resolv.conf(5) says (and Prometheus does): a name with more
        than ``ndots`` labels is tried as written first, else after the search domains."""
        qname = dns.name.from_text(name, origin=None)
        if qname.is_absolute() or self.config.nameservers:
            return [qname if qname.is_absolute() else qname.concatenate(dns.name.root)]
        search = list(resolver.search) or ([resolver.domain] if resolver.domain not in (None, dns.name.root) else [])
        as_is = qname.concatenate(dns.name.root)
        searched = [qname + suffix for suffix in search]
        return [as_is, *searched] if len(qname) > (resolver.ndots or 1) else [*searched, as_is]

    async def lookup(self, resolver: dns.asyncresolver.Resolver, name: str) -> list[TargetGroup]:
        """The groups of one name; raises DiscoveryError (failure) or _Missing (NXDOMAIN everywhere).

        As Prometheus: the first name of the search list that exists answers (even with no records
        of the type); a failure on one search name does not stop the others from being tried."""
        errors: list[str] = []
        answer = None
        try:
            qnames = self._names_to_try(resolver, name)
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{name}: not a valid DNS name: {exc}") from None
        for qname in qnames:
            try:
                answer = await resolver.resolve(qname, self.config.type, raise_on_no_answer=False, search=False)
                break
            except dns.resolver.NXDOMAIN:
                continue
            except dns.resolver.NoNameservers:
                errors.append(f"{qname}: no server gave a usable answer (SERVFAIL or REFUSED)")
            except dns.exception.Timeout:
                errors.append(f"{qname}: timed out after {resolver.lifetime:g}s")
            except dns.exception.DNSException as exc:
                errors.append(f"{qname}: {exc.__class__.__name__}: {exc}")
        if answer is None:
            if errors:
                raise DiscoveryError(f"{name}: " + "; ".join(errors))
            raise _Missing(f"{name}: no such name (NXDOMAIN)")
        rdatas: list[object] = list(answer.rrset) if answer.rrset is not None else []
        source = f"{self.job}/dns/{name}"
        return records_to_groups(name, self.config.type, self.config.port, rdatas, source)

    async def refresh(self, known: dict[str, list[TargetGroup]]) -> None:
        """Look every name up at once; update ``known`` for the names that answered."""
        try:
            resolver = self._resolver()
        except DiscoveryError as exc:
            for name in self.config.names:
                self._note(name, str(exc))
            self.failed(str(exc))
            return

        async def one(name: str) -> None:
            try:
                known[name] = await self.lookup(resolver, name)
                self._note(name, "")
            except (DiscoveryError, _Missing) as exc:
                self._note(name, str(exc))
            except Exception as exc:  # a bug or an odd answer must not stop the relay: say it, keep targets
                self._note(name, f"{name}: unexpected {exc.__class__.__name__}: {exc}")

        async with anyio.create_task_group() as tg:
            for name in self.config.names:
                tg.start_soon(one, name)
        if self.last_error is not None:  # one count per refresh that left a name failing
            self.failed(self.last_error)

    def _note(self, name: str, error: str) -> None:
        before = self.state.get(name)
        self.state[name] = error
        if error and error != before:
            log.error("dns_sd for job %s: %s; keeping its last targets", self.job, error)
        elif not error and before:
            log.info("dns_sd for job %s: %s resolves again", self.job, name)
        errors = [e for e in self.state.values() if e]
        self.last_error = "; ".join(errors) if errors else None

    async def run(self, send: Send) -> None:
        known: dict[str, list[TargetGroup]] = {}
        sent: list[TargetGroup] | None = None
        while True:
            await self.refresh(known)
            groups = [g for name in self.config.names for g in known.get(name, [])]
            # Nothing is sent before a name first resolves: after a reload the old targets stay.
            if known and groups != sent:
                send(groups)
                sent = groups
            await anyio.sleep(self.config.refresh_interval)
