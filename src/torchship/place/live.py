"""What a reachable Kubernetes site really has: GPUs per model from its nodes' labels
(`nvidia.com/gpu.product`, set by NVIDIA's GPU feature discovery) and allocatable counts, set
against what sites.toml declares."""

from __future__ import annotations

from collections.abc import Sequence

from torchship.errors import UnknownGPUError
from torchship.place.sites import GPUPool, Site, canonical_gpu


def inventory(nodes: Sequence[tuple[str, str, int]]) -> tuple[GPUPool, ...]:
    """(node, product label, allocatable GPUs) → pools per model (count, most on one node)."""
    pools: dict[str, tuple[int, int]] = {}
    for _, product, count in nodes:
        try:
            model = canonical_gpu(product) if product else "unlabelled"
        except UnknownGPUError:
            model = product
        total, most = pools.get(model, (0, 0))
        pools[model] = (total + count, max(most, count))
    return tuple(GPUPool(m, c, p) for m, (c, p) in sorted(pools.items()))


def differences(site: Site, live: Sequence[GPUPool]) -> list[str]:
    """Where the declared inventory and the cluster's disagree, one line each."""
    declared = {g.model: g for g in site.gpus}
    found = {g.model: g for g in live}
    out = []
    for model in sorted(set(declared) | set(found)):
        d, f = declared.get(model), found.get(model)
        if d is None:
            out.append(
                f"{site.name}: the cluster has {f.count if f else 0} {model} not in sites.toml"
            )
        elif f is None:
            out.append(f"{site.name}: sites.toml lists {d.count} {model}; the cluster has none")
        elif (d.count, d.per_node) != (f.count, f.per_node):
            out.append(f"{site.name}: sites.toml lists {d.count} {model} ({d.per_node} per node); "
                       f"the cluster has {f.count} ({f.per_node} per node)")  # fmt: skip
    return out
