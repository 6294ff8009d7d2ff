"""Tools for tests, benchmarks and the demo, kept out of the runtime path: the relay never imports
them while it scrapes. Behind ``relay sim`` and ``relay demo``.

    sim.py       the etcd fleet simulator (real etcd bodies, loopback)
    localenv.py  real local services for tests and the demo (etcd, VictoriaMetrics, Prometheus)
    demo.py      the quickstart's local run
"""
