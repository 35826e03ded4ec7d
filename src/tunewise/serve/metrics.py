"""Prometheus metrics of one server (prometheus-client), exposed at GET /metrics.

    tunewise_requests_total{endpoint,status}            every answer, errors included
    tunewise_request_seconds{endpoint}                   latency histogram (arrival to response start)
    tunewise_batch_size{endpoint}                        texts per model call (micro-batching at work)
    tunewise_batch_requests{endpoint}                    requests per model call
    tunewise_queue_depth{endpoint}                       requests waiting for the model now
    tunewise_guard_verdicts_total{endpoint,verdict}      injection | clean, per screened text
    tunewise_pii_found_total{endpoint,kind}              PII spans found in inputs and outputs
    tunewise_tokens_generated_total{endpoint}            chat and completions (serve-chat increments it)
    tunewise_prompt_tokens_total{endpoint}
    tunewise_log_commit_rows                              rows per group commit of the prediction log

Each app has its own registry (tests build several apps in one process). With `--workers N` the CLI sets
PROMETHEUS_MULTIPROC_DIR and /metrics sums the workers' files (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunewise_requests", "Requests answered, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("tunewise_request_seconds", "Request latency, arrival to response start.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("tunewise_batch_size", "Texts per model call.", ["endpoint"],
                                    buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("tunewise_batch_requests", "Requests per model call.", ["endpoint"],
                                        buckets=SIZE_BUCKETS, registry=r)
        self.queue_depth = Gauge("tunewise_queue_depth", "Requests waiting for the model.", ["endpoint"],
                                 registry=r, multiprocess_mode="livesum")
        self.guard_verdicts = Counter("tunewise_guard_verdicts", "Injection-guard verdicts per screened text.",
                                      ["endpoint", "verdict"], registry=r)
        self.pii_found = Counter("tunewise_pii_found", "PII spans found in inputs and outputs.",
                                 ["endpoint", "kind"], registry=r)
        self.tokens_generated = Counter("tunewise_tokens_generated", "Tokens generated.", ["endpoint"], registry=r)
        self.prompt_tokens = Counter("tunewise_prompt_tokens", "Prompt tokens read.", ["endpoint"], registry=r)
        self.log_commit_rows = Histogram("tunewise_log_commit_rows", "Rows per group commit of the prediction log.",
                                         buckets=SIZE_BUCKETS, registry=r)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
