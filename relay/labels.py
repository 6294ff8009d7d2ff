"""Target-label mutation: the labels a target gives each series it scrapes (Prometheus keeps this,
``mutateSampleLabels``, with scraping; here it is the parser's ``on_new_series`` hook).

:func:`merge_target_labels` merges a target's labels into a scraped series' labels;
:class:`LabelMerge` is the whole hook: merge, ``metric_relabel_configs``, extra labels.

The Cython parser (``relay/textparse/_text_c.pyx``) reads a :class:`LabelMerge` through its public
attributes only, documented on the class: ``fast``, ``filter_names``, ``keeps`` and ``decisions``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .batch import Labels

__all__ = ["MAX_FAST_ADDED", "LabelMerge", "merge_target_labels"]

MAX_FAST_ADDED = 32
"""At most this many labels added by a :class:`LabelMerge` are merged in C by the Cython twin."""


def merge_target_labels(name: str, labels: Labels, target_labels: Labels, honor_labels: bool) -> dict[str, str]:
    """Prometheus' mutateSampleLabels: merge target labels into a scraped series' labels."""
    lbls = dict(labels)
    lbls["__name__"] = name
    if honor_labels:
        for k, v in target_labels:
            if lbls.get(k, "") == "":
                lbls[k] = v
    else:
        conflicts = []
        for k, v in target_labels:
            old = lbls.get(k, "")
            if old != "":
                conflicts.append((k, old))
            lbls[k] = v
        conflicts.sort(key=lambda kv: len(kv[0]))  # shortest names first, as Prometheus
        for k, old in conflicts:
            new = "exported_" + k
            while lbls.get(new, "") != "":
                new = "exported_" + new
            lbls[new] = old
    return lbls


class LabelMerge:
    """The labels a target gives each of its new series, as an ``on_new_series`` hook.

    In Prometheus' order: the target labels are merged in (``honor_labels`` decides conflicts,
    which otherwise become ``exported_*``), ``relabel`` (the compiled ``metric_relabel_configs``)
    runs, then each extra label (external labels, the replica label) is added where the series has
    none; empty values are removed and the labels sorted.

        >>> merge = LabelMerge((("instance", "m1:2381"), ("job", "etcd")), honor_labels=False)
        >>> merge("up", (("job", "x"),))
        ('up', (('exported_job', 'x'), ('instance', 'm1:2381'), ('job', 'etcd')))

    When ``relabel`` only keeps or drops series (its ``filter_sources`` is not None, as for a
    :class:`~relay.relabel.Relabeler` of keep/drop rules), a series is decided by the values of
    those labels alone (``relabel.keeps``, remembered per distinct values) and a kept one is
    unchanged: no relabeling runs per series.

    The Cython parser recognises exactly this class (not a subclass, which may label otherwise)
    and merges (and filters) new series in C, calling it only for a series it cannot merge exactly
    (a conflict that makes ``exported_*`` labels, an escaped value a filter reads); ``calls``
    counts the series it labelled in Python. What the parser reads, all set once here:

    ``fast``          the added labels as ``(name bytes, value bytes, fill_only)``, sorted by
                      name, or None when a series cannot be merged by these rules alone
    ``filter_names``  the ``filter_sources`` as bytes (in that order), or None: no filter
    ``keeps``         ``keeps(values) -> bool`` for the tuple of those labels' values
    ``decisions``     the decisions ``keeps`` remembered, ``{values: kept}`` (the relabeler's own
                      ``decisions``; read only, looked up before calling ``keeps``), or None
    """

    __slots__ = ("calls", "decisions", "extra_labels", "fast", "filter_names", "filter_sources", "honor_labels",
                 "keeps", "relabel", "target_labels")

    def __init__(self, target_labels: Labels, honor_labels: bool, extra_labels: Labels = (),
                 relabel: Callable[[dict[str, str]], Mapping[str, str] | None] | None = None) -> None:
        self.target_labels = tuple(target_labels)
        self.honor_labels = honor_labels
        self.extra_labels = tuple(extra_labels)
        self.relabel = relabel
        self.calls = 0
        sources: tuple[str, ...] | None = getattr(relabel, "filter_sources", None)
        self.filter_sources = sources if relabel is not None else None
        self.keeps: Callable[[tuple[str, ...]], bool] | None = getattr(relabel, "keeps", None) if sources is not None else None
        self.filter_names = tuple(n.encode() for n in sources) if sources is not None else None
        decisions = getattr(relabel, "decisions", None) if self.keeps is not None else None
        self.decisions: dict[tuple[str, ...], bool] | None = decisions if isinstance(decisions, dict) else None
        self.fast = self._fast()

    def _fast(self) -> tuple[tuple[bytes, bytes, bool], ...] | None:
        """The added labels as ``(name, value, fill_only)`` sorted by name, or None when a series
        cannot be merged (and filtered) in C by those rules alone."""
        if self.relabel is not None:
            if self.filter_sources is None or self.keeps is None:
                return None
            hidden = {k for k, _ in self.extra_labels} - {k for k, _ in self.target_labels}
            if hidden.intersection(self.filter_sources):  # extra labels are added after relabeling
                return None
        added: dict[str, tuple[str, bool]] = {}
        for k, v in self.target_labels:
            if k in added or not k or not v or k == "__name__":
                return None
            added[k] = (v, self.honor_labels)
        for k, v in self.extra_labels:
            if not k or k == "__name__":
                return None
            if k not in added and v:
                added[k] = (v, True)
        if len(added) > MAX_FAST_ADDED:
            return None
        return tuple((k.encode(), v.encode(), fill) for k, (v, fill) in sorted(added.items()))

    def __call__(self, name: str, labels: Labels) -> tuple[str, Labels] | None:
        self.calls += 1
        lbls = merge_target_labels(name, labels, self.target_labels, self.honor_labels)
        if self.keeps is not None and self.filter_sources is not None:  # keep/drop only: decided by a few labels
            if not self.keeps(tuple(lbls.get(k, "") for k in self.filter_sources)):
                return None
        elif self.relabel is not None:
            relabeled = self.relabel(lbls)
            if relabeled is None:
                return None
            lbls = dict(relabeled)
        for k, v in self.extra_labels:
            if lbls.get(k, "") == "":
                lbls[k] = v
        name = lbls.pop("__name__", "")
        if not name:
            return None
        return name, tuple(sorted((k, v) for k, v in lbls.items() if v != ""))
