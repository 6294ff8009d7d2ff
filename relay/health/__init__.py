"""etcd fleet health: the etcd mixin's alerts evaluated on the relay's own samples (issue 17).

``engine.HealthEngine`` is the scrape sink and rule evaluator, ``rules`` the rule table (from the
bundled ``etcd-mixin-alerts.yaml``, the etcd project's ``contrib/mixin`` rendered; Apache-2.0),
``promql`` the functions with Prometheus' semantics, ``store`` the bounded per-member rings,
``fleet`` the ``/fleet`` page.
"""

from .engine import HealthEngine
from .rules import Override, Rule, apply_overrides, default_rules

__all__ = ["HealthEngine", "Override", "Rule", "apply_overrides", "default_rules"]
