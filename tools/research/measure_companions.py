#!/usr/bin/env python3
"""Measure torch and its companion packages on PyPI (standard library only).

For every release in scope this records, per package:
  * the wheel files' Python tags, grouped by platform family
    (linux-x86_64, linux-aarch64, windows-x86_64, macos-arm64, macos-x86_64, other),
    plus the raw platform tags (manylinux1 vs manylinux_2_28 ...) and build tags;
  * yanked status (release-level: all files yanked / some / none) and reason;
  * Requires-Python (from the file listing; every distinct value is kept);
  * for the companions: the `torch` lines of Requires-Dist, read from the METADATA
    of one wheel per release (PEP 658 `<url>.metadata` when the index offers it,
    otherwise two or three HTTP range requests into the wheel's zip: the central
    directory and the METADATA member; never the whole wheel). For sdist-only
    releases (flash-attn) PKG-INFO is read from the first bytes of the tar.gz.
  * for xformers / bitsandbytes / torchao: what the wheel says about CUDA
    (`xformers/cpp_lib.json`, the `libbitsandbytes_cudaXYZ` libraries, the names
    of torchao's native extensions, and whether the file name has a +cuXYZ tag).

Sources (see "source" in the output):
  https://pypi.org/pypi/<name>/json                 (JSON API: releases, yanked, requires_python)
  https://pypi.org/simple/<name>/  (PEP 691 JSON)   (absolute file URLs, core-metadata flag)
  https://files.pythonhosted.org/...                (range reads of METADATA / cpp_lib.json)

Usage:
  python tools/research/measure_companions.py --out tools/research/companions.json
  python tools/research/measure_companions.py --out x.json --only torchvision,xformers \
      --cache /tmp/mc-cache
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

UA = "torchship-research/measure_companions (stdlib urllib)"
JSON_API = "https://pypi.org/pypi/{name}/json"
SIMPLE_API = "https://pypi.org/simple/{name}/"

# name -> scope. "min": first version measured; "since_days": releases uploaded in the last N days.
PACKAGES = {
    "torch": {"min": "2.0.0", "metadata": False},
    "torchvision": {"min": "0.15.0", "metadata": True},
    "torchaudio": {"min": "2.0.0", "metadata": True},
    "xformers": {"since_days": 730, "metadata": True},
    "flash-attn": {"since_days": 730, "metadata": True},
    "bitsandbytes": {"since_days": 730, "metadata": True},
    "torchao": {"since_days": 730, "metadata": True},
    # xformers >= 0.0.35.dev1144 requires `mslk` (its kernels moved there)
    "mslk": {"since_days": 730, "metadata": True},
}

FAMILY_ORDER = [
    "linux-x86_64",
    "linux-aarch64",
    "windows-x86_64",
    "macos-arm64",
    "macos-x86_64",
    "any",
    "other",
]

# run-time state: optional raw HTTP cache directory and a request counter
STATE = {"cache_dir": None, "requests": 0}


# --------------------------------------------------------------------------- HTTP
def http_get(url: str, headers: dict | None = None, rng: str | None = None, retries: int = 3):
    """GET url (optionally a byte range). Returns (body, response headers). Cached if --cache."""
    cache_dir = STATE["cache_dir"]
    key = None
    if cache_dir:
        key = hashlib.sha256(f"{url}|{rng}|{headers}".encode()).hexdigest()
        path = os.path.join(cache_dir, key)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                blob = fh.read()
            n = int.from_bytes(blob[:4], "big")
            return blob[4 + n :], json.loads(blob[4 : 4 + n])
    h = {"User-Agent": UA}
    h.update(headers or {})
    if rng:
        h["Range"] = "bytes=" + rng
    last = None
    for attempt in range(retries):
        try:
            STATE["requests"] += 1
            with urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=120) as r:
                body = r.read()
                rh = {k.lower(): v for k, v in r.headers.items()}
            break
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                raise
            last = e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            last = e
        time.sleep(2 * (attempt + 1))
    else:
        raise RuntimeError(f"GET {url} failed: {last}")
    if cache_dir:
        hb = json.dumps(rh).encode()
        with open(os.path.join(cache_dir, key), "wb") as fh:
            fh.write(len(hb).to_bytes(4, "big") + hb + body)
    return body, rh


def get_json(url: str, accept: str | None = None):
    body, _ = http_get(url, {"Accept": accept} if accept else None)
    return json.loads(body)


# --------------------------------------------------------------------------- zip range reads
def get_range(url: str, rng: str):
    body, h = http_get(url, rng=rng)
    cr = h.get("content-range", "")
    total = int(cr.rsplit("/", 1)[1]) if "/" in cr else len(body)
    return body, total


def zip_central_directory(url: str, tail: int = 65536):
    """Return {member name: (method, compressed size, size, local header offset)}."""
    data, total = get_range(url, f"-{tail}")
    start = total - len(data)
    i = data.rfind(b"PK\x05\x06")
    if i < 0:
        raise ValueError(f"no end-of-central-directory record in the last {tail} bytes")
    cd_size, cd_off = struct.unpack("<II", data[i + 12 : i + 20])
    if 0xFFFFFFFF in (cd_size, cd_off):  # zip64
        j = data.rfind(b"PK\x06\x07")
        z64 = struct.unpack("<Q", data[j + 8 : j + 16])[0] - start
        cd_size, cd_off = struct.unpack("<QQ", data[z64 + 40 : z64 + 56])
    if cd_off >= start:
        cd = data[cd_off - start : cd_off - start + cd_size]
    else:
        cd, _ = get_range(url, f"{cd_off}-{cd_off + cd_size - 1}")
    members, p = {}, 0
    while p + 46 <= len(cd) and cd[p : p + 4] == b"PK\x01\x02":
        (method,) = struct.unpack("<H", cd[p + 10 : p + 12])
        csize, usize, nlen, elen, clen = struct.unpack("<IIHHH", cd[p + 20 : p + 34])
        (lho,) = struct.unpack("<I", cd[p + 42 : p + 46])
        name = cd[p + 46 : p + 46 + nlen].decode("utf-8", "replace")
        members[name] = (method, csize, usize, lho)
        p += 46 + nlen + elen + clen
    return members


def zip_read_member(url: str, entry) -> bytes:
    method, csize, _usize, lho = entry
    data, _ = get_range(url, f"{lho}-{lho + 30 + 1024 + csize - 1}")  # 1024: slack for name+extra
    nlen, elen = struct.unpack("<HH", data[26:30])
    raw = data[30 + nlen + elen : 30 + nlen + elen + csize]
    return zlib.decompress(raw, -15) if method == 8 else raw


def sdist_pkg_info(url: str, first_bytes: int = 1 << 20) -> str | None:
    """PKG-INFO from the first bytes of a .tar.gz (it is usually one of the first members)."""
    data, _ = get_range(url, f"0-{first_bytes - 1}")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        tar = d.decompress(data)
    except zlib.error:
        return None
    p = 0
    while p + 512 <= len(tar):
        hdr = tar[p : p + 512]
        if not hdr.strip(b"\0"):
            break
        name = hdr[0:100].rstrip(b"\0").decode("utf-8", "replace")
        prefix = hdr[345:500].rstrip(b"\0").decode("utf-8", "replace")
        size = int(hdr[124:136].rstrip(b"\0 ").decode() or "0", 8)
        full = f"{prefix}/{name}" if prefix else name
        if full.count("/") == 1 and full.endswith("/PKG-INFO") and p + 512 + size <= len(tar):
            return tar[p + 512 : p + 512 + size].decode("utf-8", "replace")
        p += 512 + ((size + 511) // 512) * 512
    return None


# --------------------------------------------------------------------------- parsing helpers
_VER = re.compile(r"^(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.post(\d+))?(?:\.dev(\d+))?$")


def vkey(v: str):
    """PEP 440-ish sort key: X.devN < XaN < XbN < XrcN < X < X.postN."""
    m = _VER.match(v)
    if not m:
        return ((0,), 0, 0, 0, 0)
    rel = tuple(int(x) for x in m.group(1).split("."))
    rel = rel + (0,) * (4 - len(rel))
    pre, pre_n, post, dev = m.group(2), m.group(3), m.group(4), m.group(5)
    if pre:
        phase = {"a": 1, "b": 2, "rc": 3}[pre]
    elif post is not None:
        phase = 5
    elif dev is not None:
        phase = 0
    else:
        phase = 4
    return (
        rel,
        phase,
        int(pre_n or 0),
        int(post or 0),
        int(dev) if dev is not None else float("inf"),
    )


def is_prerelease(v: str) -> bool:
    return bool(re.search(r"(a|b|rc|dev)\d+", v))


def parse_wheel(filename: str):
    """-> dict(build, py, abi, plats) or None for non-wheels."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) == 6:
        _n, _v, build, py, abi, plat = parts
    elif len(parts) == 5:
        _n, _v, py, abi, plat = parts
        build = None
    else:
        return None
    return {"build": build, "py": py, "abi": abi, "plats": plat.split(".")}


def family(plat: str) -> str:
    if plat == "any":
        return "any"
    if "linux" in plat and plat.endswith("x86_64"):
        return "linux-x86_64"
    if "linux" in plat and plat.endswith("aarch64"):
        return "linux-aarch64"
    if plat == "win_amd64":
        return "windows-x86_64"
    if plat.startswith("macosx") and plat.endswith("arm64"):
        return "macos-arm64"
    if plat.startswith("macosx") and plat.endswith("x86_64"):
        return "macos-x86_64"
    return "other"


def py_label(w: dict) -> list[str]:
    """cp313 / cp313t (free-threaded) / cp39-abi3 / py3 ..."""
    out = []
    for py in w["py"].split("."):
        if w["abi"] == "abi3":
            out.append(f"{py}-abi3")
        elif w["abi"].endswith("t") and w["abi"].startswith("cp"):
            out.append(w["abi"])  # cp313t
        elif w["abi"] == "none":
            out.append(py)  # py3, py39 ...
        else:
            out.append(py)
    return out


def tag_key(t: str):
    m = re.match(r"(cp|py)(\d)(\d*)", t)
    if not m:
        return (9, 0, t)
    return (int(m.group(2)), int(m.group(3) or 0), t)


def parse_metadata(text: str) -> dict:
    reqs, rp = [], None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")  # Windows-built wheels may carry CRLF
        if line == "":
            break  # headers end at the first blank line; the body is the long description
        if line.startswith("Requires-Dist:"):
            reqs.append(line.split(":", 1)[1].strip())
        elif line.startswith("Requires-Python:"):
            rp = line.split(":", 1)[1].strip()
    return {"requires_dist": reqs, "requires_python": rp}


def torch_spec(reqs: list[str]):
    """Requires-Dist lines naming torch, and the bare specifier of the first unconditional one."""
    lines = [r for r in reqs if re.match(r"^torch\b(?![-_.\w])", r)]
    spec = None
    for r in lines:
        if "extra ==" in r:
            continue
        s = re.sub(r"^torch\s*", "", r.split(";")[0]).strip().strip("()").strip()
        spec = s or "(any)"
        break
    return lines, spec


# --------------------------------------------------------------------------- measurement
def choose_wheel(files: list[dict]):
    """One wheel per release: prefer Linux x86_64, newest CPython tag."""
    wheels = [f for f in files if f["filename"].endswith(".whl")]
    if not wheels:
        return None

    def score(f):
        w = parse_wheel(f["filename"]) or {"plats": [], "py": ""}
        fams = {family(p) for p in w["plats"]}
        py = py_label(w)[0] if w.get("abi") else ""
        return (("linux-x86_64" in fams), not py.endswith("t"), tag_key(py))

    return max(wheels, key=score)


def wheel_extras(pkg: str, url: str, members: dict) -> dict:
    """What the wheel's contents say about the build: native libraries, version.py, CUDA."""
    names = list(members)
    out = {
        "native_libs": sorted(n for n in names if re.search(r"\.(so|pyd|dll|dylib)(\.\d+)*$", n))
    }
    vp = f"{pkg.replace('-', '_')}/version.py"
    if vp in members:  # torchvision/torchaudio: __version__ = '0.20.0+cu124', cuda = '12.4'
        text = zip_read_member(url, members[vp]).decode("utf-8", "replace")
        out["version_py"] = {
            k: v
            for k, v in re.findall(r"^(\w+)\s*=\s*['\"]?([^'\"\n]*)['\"]?", text, re.M)
            if k in ("__version__", "cuda", "hip", "git_version")
        }
    if pkg == "xformers" and "xformers/cpp_lib.json" in members:
        try:
            out["cpp_lib_json"] = json.loads(zip_read_member(url, members["xformers/cpp_lib.json"]))
        except Exception as e:
            out["cpp_lib_json_error"] = str(e)
    if pkg == "bitsandbytes":
        libs = [n.split("/")[-1] for n in out["native_libs"]]
        out["cuda_libs"] = sorted(
            {m.group(1) for n in libs for m in [re.search(r"_cuda(\d+)", n)] if m}, key=int
        )
    return out


def summarize_files(files: list[dict]) -> dict:
    """Release-level facts from the file listing alone (no downloads)."""
    rec = {}
    rps = sorted({f["requires_python"] for f in files if f["requires_python"]})
    rec["requires_python"] = rps[0] if len(rps) == 1 else (rps or None)
    yanked = [f for f in files if f.get("yanked")]
    rec["yanked"] = True if len(yanked) == len(files) else ("partial" if yanked else False)
    if yanked:
        rec["yanked_reason"] = sorted({f.get("yanked_reason") or "" for f in yanked})
    wheels, plats, builds, odd_abi = {}, {}, {}, []
    for f in files:
        w = parse_wheel(f["filename"])
        if not w:
            continue
        if w["build"]:
            builds.setdefault(w["build"], []).append(f["filename"])
        if w["py"].startswith("cp") and w["abi"] == "none":
            odd_abi.append(f["filename"])
        for p in w["plats"]:
            fam = family(p)
            wheels.setdefault(fam, set()).update(py_label(w))
            plats.setdefault(fam, set()).add(p)
    rec["wheels"] = {fam: sorted(wheels[fam], key=tag_key) for fam in FAMILY_ORDER if fam in wheels}
    rec["platform_tags"] = {fam: sorted(plats[fam]) for fam in FAMILY_ORDER if fam in plats}
    if builds:  # re-uploads of some files under a wheel build tag
        rec["build_tags"] = {b: sorted(v) for b, v in sorted(builds.items())}
    if odd_abi:  # cpXY python tag with abi "none"
        rec["cp_none_abi_files"] = sorted(odd_abi)
    rec["sdist"] = any(f["packagetype"] == "sdist" for f in files)
    if not wheels:
        rec["sdist_only"] = True
    rec["cuda_in_filename"] = sorted(
        {m for f in files for m in re.findall(r"\+(cu\d+)", f["filename"])}
    )
    return rec


def in_scope(ver: str, first_upload: str, scope: dict, since: str | None) -> bool:
    if "min" in scope and vkey(ver) < vkey(scope["min"]):
        return False
    return not (since and first_upload < since)


def measure_package(name: str, scope: dict, today: dt.date, verbose: bool = True) -> dict:
    api = get_json(JSON_API.format(name=name))
    simple = get_json(SIMPLE_API.format(name=name), accept="application/vnd.pypi.simple.v1+json")
    by_file = {f["filename"]: f for f in simple.get("files", [])}
    since = None
    if "since_days" in scope:
        since = (today - dt.timedelta(days=scope["since_days"])).isoformat()
    releases = {}
    for ver, files in api["releases"].items():
        if not files:
            continue
        first_upload = min(f["upload_time_iso_8601"] or f["upload_time"] for f in files)[:10]
        if not in_scope(ver, first_upload, scope, since):
            continue
        rec = {"upload_date": first_upload}
        if is_prerelease(ver):
            rec["prerelease"] = True
        rec.update(summarize_files(files))
        if scope.get("metadata"):
            try:
                rec.update(fetch_release_metadata(name, files, by_file))
            except Exception as e:  # keep going; the error is recorded in the output
                rec["metadata_error"] = f"{type(e).__name__}: {e}"
        releases[ver] = rec
        if verbose:
            print(
                f"  {name} {ver}: torch={rec.get('torch')} rp={rec['requires_python']} "
                f"fams={list(rec['wheels'])}",
                file=sys.stderr,
            )
    ordered = {v: releases[v] for v in sorted(releases, key=vkey)}
    return {"latest": api["info"]["version"], "releases": ordered}


def fetch_release_metadata(name: str, files: list[dict], by_file: dict) -> dict:
    out = {}
    wf = choose_wheel(files)
    if wf:
        sf = by_file.get(wf["filename"], {})
        url = sf.get("url") or urllib.parse.urljoin(JSON_API.format(name=name), wf["url"])
        text, how = None, None
        if sf.get("core-metadata") or sf.get("data-dist-info-metadata"):
            try:
                body, _ = http_get(url + ".metadata")
                text, how = body.decode("utf-8", "replace"), "PEP 658 .metadata"
            except urllib.error.HTTPError:
                text = None
        members = zip_central_directory(url)  # also needed for wheel_extras
        if text is None:
            md = [n for n in members if re.match(r"^[^/]+\.dist-info/METADATA$", n)]
            text = zip_read_member(url, members[md[0]]).decode("utf-8", "replace")
            how = "zip range read of .dist-info/METADATA"
        meta = parse_metadata(text)
        out["metadata_from"] = {"file": wf["filename"], "method": how}
        out["wheel_contents"] = wheel_extras(name, url, members)
    else:
        sd = [f for f in files if f["packagetype"] == "sdist"]
        if not sd:
            return {}
        sf = by_file.get(sd[0]["filename"], {})
        url = sf.get("url") or urllib.parse.urljoin(JSON_API.format(name=name), sd[0]["url"])
        text = sdist_pkg_info(url)
        out["metadata_from"] = {
            "file": sd[0]["filename"],
            "method": "PKG-INFO from first 1 MiB of the sdist",
        }
        if text is None:
            out["metadata_error"] = "PKG-INFO not found in the first 1 MiB"
            return out
        meta = parse_metadata(text)
    lines, spec = torch_spec(meta["requires_dist"])
    out["torch"] = spec
    out["requires_dist_torch"] = lines
    out["requires_dist"] = [r for r in meta["requires_dist"] if "extra ==" not in r]
    if meta["requires_python"]:
        out["metadata_requires_python"] = meta["requires_python"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output JSON path")
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(PACKAGES))
    ap.add_argument("--cache", help="directory for a raw HTTP cache (re-runs without network)")
    ap.add_argument(
        "--today", help="override the measurement date (YYYY-MM-DD) for the since-window"
    )
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.cache:
        os.makedirs(args.cache, exist_ok=True)
        STATE["cache_dir"] = args.cache
    today = dt.date.fromisoformat(args.today) if args.today else dt.datetime.now(dt.UTC).date()
    names = args.only.split(",") if args.only else list(PACKAGES)
    result = {
        "measured_at": today.isoformat(),
        "source": {
            "json_api": JSON_API,
            "simple_api": SIMPLE_API + " (Accept: application/vnd.pypi.simple.v1+json)",
            "metadata": (
                "PEP 658 <wheel url>.metadata when offered (core-metadata); otherwise HTTP "
                "range requests into the wheel zip on files.pythonhosted.org (central "
                "directory + .dist-info/METADATA); sdists: PKG-INFO from the first 1 MiB"
            ),
            "script": "tools/research/measure_companions.py",
        },
        "notes": {
            "wheels": (
                "Python tags per platform family. cp313t = free-threaded ABI; cp39-abi3 = "
                "stable ABI (one wheel for cp39+); py3 = py3-none (pure or bundled native libs)."
            ),
            "yanked": "true = every file of the release is yanked; 'partial' = some files.",
            "torch": (
                "bare specifier of the unconditional `torch` line in Requires-Dist of one "
                "wheel (metadata_from); null when the release declares no torch requirement."
            ),
            "scope": {k: v for k, v in PACKAGES.items() if k in names},
        },
    }
    for n in names:
        if not args.quiet:
            print(f"measuring {n} ...", file=sys.stderr)
        result[n] = measure_package(n, PACKAGES[n], today, verbose=not args.quiet)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1, sort_keys=False)
        fh.write("\n")
    if not args.quiet:
        print(f"wrote {args.out} ({STATE['requests']} HTTP requests)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
