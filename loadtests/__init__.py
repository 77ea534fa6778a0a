"""Locust load tests for the inventory engine, and the run-level check that ends every run.

Layout (details in ``loadtests/README.md``):

- :mod:`loadtests.journal` - what clients were told, one JSONL file per load process;
- :mod:`loadtests.traffic` - Zipf SKU popularity, think times, channel mix, ids;
- :mod:`loadtests.grpc_user` - the Locust ``User`` base that speaks gRPC under gevent;
- :mod:`loadtests.users` - shopper, POS, call-center, marketplace and ERP behaviours;
- ``loadtests/scenarios/*.py`` - the locustfiles: flash sale, omnichannel day, soak;
- :mod:`loadtests.check` - ``python -m loadtests.check``: journal vs store, exit 1 on a violation;
- :mod:`loadtests.smoke` - ``make loadtest-smoke``: engine + Locust + audit + check, bounded.

Only ``grpc_user``, ``users`` and the scenarios import Locust (which monkey-patches
the standard library with gevent on import); the journal, the checker and the
smoke runner do not, so tests and tools can import them in an ordinary process.
"""
