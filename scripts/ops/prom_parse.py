"""Parses a Prometheus text exposition with the reference parser (prometheus_client) and
prints every sample as one JSON object: {"name{label=value,...}": value}.

The metrics test (crates/tidings/tests/metrics.rs) pipes the server's /metrics into this, so
the format is checked by a third-party parser, not by our own reading of it.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
json.dump({"families": families, "samples": samples}, sys.stdout, sort_keys=True)
