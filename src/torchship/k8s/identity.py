"""Which cluster a kubeconfig context reaches, and the identities torchship has recorded.

A site names its kubeconfig context, but a context is only a name: `kubectl config
use-context`, a merged kubeconfig or an edited one can point it at another cluster. The
identity of the cluster is what the client will really talk to: the API server's URL and the
fingerprint of the CA it verifies the server's certificate against (the client refuses a
server the CA did not sign, so the fingerprint pins the cluster; a cluster reached over plain
HTTP, or with verification off, is pinned by its URL only, and `site check` says so).

Identities are recorded per site in `clusters.json` in torchship's data dir, as SSH records
host keys in known_hosts: by `site add` and the first `site check`, and checked before every
apply, status, logs and cancel. A change is refused with both identities, never re-recorded
silently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from torchship._atomic import write_text_atomic
from torchship.conventions import data_dir
from torchship.errors import TorchshipError, UsageError, excerpt

CLUSTERS_FILE = "clusters.json"
NO_CA = "none"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class IdentityError(TorchshipError):
    """A context reaches another cluster than the one recorded for the site or the job."""


@dataclass(frozen=True, slots=True)
class ClusterIdentity:
    server: str  # the API server's URL, normalised (scheme and host lower case, no default port)
    ca_sha256: str  # sha256 of the CA certificates (DER), or "none": not verified by a CA
    route: str = ""  # how the client gets there, when not directly: "proxy=…", "tls-name=…"
    uid: str = ""  # the cluster's own answer: the kube-system namespace's UID ("" unreadable)

    @property
    def digest(self) -> str:
        """16 hex digits naming this identity (in job handles)."""
        text = f"{self.server}\n{self.ca_sha256}\n{self.route}\n{self.uid}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def verified(self) -> bool:
        return self.ca_sha256 != NO_CA

    def describe(self) -> str:
        ca = f"CA sha256:{self.ca_sha256[:16]}…" if self.verified else "no CA"
        parts = [self.server, ca, *([self.route] if self.route else [])]
        parts.append(f"cluster uid {self.uid}" if self.uid else "cluster uid unreadable")
        return ", ".join(parts)


def normal_url(url: str) -> str:
    """One spelling per server: `HTTPS://Host.:443/` and `https://host` are the same."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    default = {"https": 443, "http": 80}.get(scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def cluster_uid(api: Any) -> str:
    """The UID of the cluster's kube-system namespace, read through the client that sends the
    jobs: what a gateway or a proxy in front of several clusters cannot fake by its URL. ""
    when this user may not read it (the identity then rests on the URL, CA and route)."""
    from kubernetes import client

    try:
        ns = client.CoreV1Api(api).read_namespace("kube-system", _request_timeout=10)
    except client.ApiException as e:
        if e.status in (401, 403, 404):
            return ""
        raise UsageError(f"cannot read the cluster's identity: HTTP {e.status} {e.reason}",
                         "check the context and that the cluster is up") from None  # fmt: skip
    except (OSError, urllib3_errors()) as e:
        why = excerpt(str(getattr(e, "reason", None) or e), 120)
        raise UsageError(f"the API server did not answer: {why}",
                         "check the context and that the cluster is up") from None  # fmt: skip
    return str(getattr(ns.metadata, "uid", "") or "")


def urllib3_errors() -> type[Exception]:
    from urllib3.exceptions import HTTPError

    return HTTPError


def ca_fingerprint(pem: str) -> str:
    """sha256 over the DER bytes of every certificate in a PEM bundle; NO_CA when none."""
    blocks = _PEM.findall(pem)
    if not blocks:
        return NO_CA
    h = hashlib.sha256()
    for block in blocks:
        h.update(ssl.PEM_cert_to_DER_cert(block))
    return h.hexdigest()


def identity_of(api: Any, ask: bool = True) -> ClusterIdentity:
    """The cluster an ApiClient will talk to: its configuration's host, CA (the kubernetes
    client writes a kubeconfig's certificate-authority-data to a file and names it), proxy and
    TLS server name, and the UID the cluster itself answers with (`ask`: read it)."""
    cfg = api.configuration
    server = normal_url(str(cfg.host))
    route = ";".join(
        f"{k}={v}" for k, v in (("proxy", getattr(cfg, "proxy", None)),
                                ("tls-name", getattr(cfg, "tls_server_name", None))) if v
    )  # fmt: skip
    uid = cluster_uid(api) if ask else ""
    ca_file = getattr(cfg, "ssl_ca_cert", None)
    if not server.startswith("https:") or not getattr(cfg, "verify_ssl", True) or not ca_file:
        return ClusterIdentity(server, NO_CA, route, uid)
    try:
        pem = Path(ca_file).read_text("ascii", errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read the cluster's CA file {ca_file}: {e}",
                         "check the kubeconfig's certificate-authority") from None  # fmt: skip
    return ClusterIdentity(server, ca_fingerprint(pem), route, uid)


@dataclass(frozen=True, slots=True)
class Recorded:
    site: str
    context: str
    trust: str
    identity: ClusterIdentity
    recorded_at: str


def clusters_path() -> Path:
    return data_dir() / CLUSTERS_FILE


def load_recorded(path: Path | None = None) -> dict[str, Recorded]:
    """Site name → what was recorded for it; {} when nothing was."""
    path = path or clusters_path()
    try:
        raw = json.loads(path.read_text("utf-8"))
        return {
            name: Recorded(name, r["context"], r["trust"],
                           ClusterIdentity(r["server"], r["ca_sha256"], r.get("route", ""),
                                           r.get("uid", "")), r["recorded_at"])
            for name, r in raw["sites"].items()
        }  # fmt: skip
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(
            f"{path}: the recorded cluster identities cannot be read ({type(e).__name__}: {e})",
            "move the file away and run `torchship site check` to record them again",
        ) from None


def save_recorded(records: dict[str, Recorded], path: Path | None = None) -> None:
    path = path or clusters_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {
        "sites": {
            r.site: {"context": r.context, "trust": r.trust, "server": r.identity.server,
                     "ca_sha256": r.identity.ca_sha256, "route": r.identity.route,
                     "uid": r.identity.uid, "recorded_at": r.recorded_at}
            for r in sorted(records.values(), key=lambda r: r.site)
        }
    }  # fmt: skip
    write_text_atomic(path, json.dumps(data, indent=2) + "\n", mode=0o600)


def same_cluster(a: ClusterIdentity, b: ClusterIdentity) -> bool:
    """Two identities that may be one cluster: the same server, the same CA, or the same UID."""
    return (
        a.server == b.server
        or (a.verified and a.ca_sha256 == b.ca_sha256)
        or bool(a.uid and a.uid == b.uid)
    )


def shared_with(
    site: str, trust: str, identity: ClusterIdentity, records: dict[str, Recorded]
) -> Recorded | None:
    """A site of another trust recorded on the same cluster (its API server or its CA)."""
    for r in records.values():
        if r.site == site or r.trust == trust:
            continue
        if same_cluster(r.identity, identity):
            return r
    return None


def record(
    site: str, context: str, trust: str, identity: ClusterIdentity, path: Path | None = None
) -> tuple[Recorded, bool]:
    """Record `site`'s cluster on first sight; (the record, whether it is new). A different
    identity than the recorded one, or a cluster a site of another trust is recorded on, is
    refused."""
    records = load_recorded(path)
    old = records.get(site)
    if old is not None:
        check_recorded(old, context, trust, identity)
        return old, False
    other = shared_with(site, trust, identity, records)
    if other is not None:
        raise IdentityError(
            f"sites {other.site} ({other.trust}) and {site} ({trust}) would share the cluster "
            f"{identity.server}",
            "sites of different trust may not share a cluster: give each its own context "
            "and cluster",
        )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    new = Recorded(site, context, trust, identity, now)
    save_recorded({**records, site: new}, path)
    return new, True


def check_recorded(rec: Recorded, context: str, trust: str, identity: ClusterIdentity) -> None:
    """The site still names the recorded context, with the recorded trust, and the context
    still reaches the recorded cluster."""
    if rec.trust != trust:  # a cloud relabelled private would take sensitive data
        raise IdentityError(
            f"site {rec.site} was recorded as {rec.trust}, and is now declared {trust}",
            f"if that is meant: `torchship site forget {rec.site}`, then `torchship site check`",
        )
    if rec.context != context:
        raise IdentityError(
            f"site {rec.site} was recorded with context {rec.context!r}, and now names {context!r}",
            f"if the site really moved: `torchship site forget {rec.site}`, then "
            "`torchship site check`",
        )
    if rec.identity != identity:
        raise IdentityError(
            f"context {context!r} of site {rec.site} now reaches {identity.describe()}, not "
            f"the cluster recorded on {rec.recorded_at[:10]} ({rec.identity.describe()})",
            "switch the context back (`kubectl config get-contexts`); if the cluster really "
            f"changed: `torchship site forget {rec.site}`, then `torchship site check`",
        )


def check_site(site: str, context: str, trust: str, identity: ClusterIdentity) -> None:
    """Before anything is sent: the site's cluster is recorded, the context still reaches it,
    and no site of another trust is recorded on it."""
    records = load_recorded()
    rec = records.get(site)
    if rec is None:
        raise IdentityError(
            f"the cluster of site {site} is not recorded: torchship does not send jobs "
            "to a cluster it has not been shown",
            "run `torchship site check` (it records each Kubernetes site's cluster)",
        )
    check_recorded(rec, context, trust, identity)
    other = shared_with(site, trust, identity, records)
    if other is not None:
        raise IdentityError(
            f"site {site} ({trust}) reaches the cluster recorded for {other.site} "
            f"({other.trust}): {identity.describe()}",
            "sites of different trust may not share a cluster",
        )


def forget(site: str, path: Path | None = None) -> bool:
    records = load_recorded(path)
    if site not in records:
        return False
    del records[site]
    save_recorded(records, path)
    return True


def record_cluster(site: str, context: str, trust: str) -> str:
    """Record (first time) or check the cluster a site's context reaches; the line to say
    (`torchship site add` and `site check`, for any kind of site that reaches a cluster by a
    kubeconfig context). A context that cannot be read is a warning line (recorded by a later
    `site check`); a changed cluster, or one a site of another trust is recorded on, is an
    IdentityError."""
    from torchship.k8s.apply import connect

    try:
        identity = identity_of(connect(context))
    except UsageError as e:
        return f"warning: {site}: cluster not recorded: {e.message}"
    _, new = record(site, context, trust, identity)
    verb = "recorded" if new else "is the recorded cluster"
    line = f"{site}: context {context!r} {verb}: {identity.describe()}"
    if not identity.verified:
        line += (f"\nwarning: {site}: the cluster is pinned by its URL only (no CA "
                 "verifies it): a DNS change could move jobs elsewhere")  # fmt: skip
    return line
