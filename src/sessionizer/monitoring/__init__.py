"""Seeing a job run: Prometheus metrics, health probes and a status page.

- `metrics`: the metric families (one registry per process or replay), fed from the core's
  counts at each commit, so the counters agree with what Kafka holds as committed;
- `health`: liveness (the main loop moves) and readiness (restored, consuming, Kafka answers);
- `status`: what the status page shows, kept by the runtime about once a second;
- `page`: that page, server-rendered HTML;
- `server`: the HTTP endpoints (/metrics, /healthz, /readyz, /) on a thread of their own.
"""
