"""Deterministic, DNS-1035-safe job names, and the name patterns the spec rules share."""

from __future__ import annotations

import hashlib
import json
import re

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"^{_DNS1123}$")  # namespaces, label values: at most 63 characters
DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123}(\.{_DNS1123})*$")  # most object names: 253
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A Kubernetes resource quantity such as 16Gi or 512Mi.
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
# Pods and Services are named "<job>-worker-<i>" (PyTorchJob) or "<job>-node-0-<i>" (TrainJob)
# and those must fit a 63-character DNS label, so the job name keeps room for the suffix.
MAX_NAME_LEN = 48


def slug(text: str, max_len: int) -> str:
    """Lowercase DNS-1035 fragment of `text` (may be empty)."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    out = re.sub(r"^[^a-z]+", "", out)  # must start with a letter
    return out[:max_len].rstrip("-")


def derive_name(model: str, canonical: dict) -> str:
    """`mgft-<model>-<hash>`: the same spec always gives the same name."""
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:8]
    base = model.rstrip("/").rsplit("/", 1)[-1]
    stem = slug(base, MAX_NAME_LEN - len("mgft--") - len(digest))
    return f"mgft-{stem}-{digest}" if stem else f"mgft-{digest}"
