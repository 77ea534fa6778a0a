"""Observability: Prometheus metrics, their exposition, structured logs.

- :mod:`engine.observability.metrics` defines every metric the engine exports
  and the one-line helpers the service layer and the stores call;
- :mod:`engine.observability.exposition` serves them over HTTP (one process, or
  the ``serve --workers N`` supervisor aggregating its workers);
- :mod:`engine.observability.sampler` turns store state (journal counters,
  expiry lag, view lag, periodic audits) into metrics on the event loop;
- :mod:`engine.observability.logs` configures text or JSON logs carrying the
  request id of the RPC being served.

This package imports nothing on purpose: prometheus_client picks its
single-process or multiprocess storage when the first metric is defined, so the
supervisor must be able to choose before :mod:`.metrics` is imported.
"""
