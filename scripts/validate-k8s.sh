#!/usr/bin/env bash
# Validate the Kubernetes manifests (deploy/k8s) offline, with no cluster:
#
#   bash scripts/validate-k8s.sh [DIR]      # DIR defaults to deploy/k8s
#
# 1. Schema: every document of every *.yaml/*.yml file under DIR against the Kubernetes
#    OpenAPI schemas of release 1.30 (K8S_VERSION=1.37 picks another), in strict mode, so an
#    unknown or misspelt field fails rather than being dropped by the API server without a
#    word. 1.30 is a floor: the manifests use nothing newer, so they hold for 1.30 and later
#    clusters (they also pass 1.37, the newest schema set bundled). The schemas come with the
#    PyPI package kubernetes-validate (one set per release, 1.25 to 1.37 in the pinned
#    version), so validating reads local files only and needs no network (it passes inside
#    `unshare -n`); installing the package needs PyPI once. A document whose kind/apiVersion
#    has no schema (a typo'd kind, a CRD) fails too, where the tool itself would only warn.
# 2. Consistency that no schema can express: the StatefulSet's replicas equals the number of
#    --peers entries (ids 1..N, named <statefulset>-<ordinal>.<serviceName>); the load Job's
#    --of equals its completions and parallelism, the merge Job reads exactly that many worker
#    folders, and --target names exactly the peers; the PodDisruptionBudget keeps a quorum; the
#    scenario ConfigMap equals scenarios/chat.yaml.
#
# Exits 1 naming the file and document that failed, or when DIR holds no manifest.
# kubernetes-validate is installed into a virtualenv under the user's cache directory the first
# time (no root needed) and reused after; delete that directory to reinstall.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/deploy/k8s}"
k8s_version="${K8S_VERSION:-1.30}"
kv_version="1.37.0"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/telegraft/k8s-venv"

if [ ! -d "$dir" ]; then
  echo "validate-k8s: no such directory: $dir" >&2
  exit 1
fi

# The marker is written last, so an install cut short is redone rather than half-used.
marker="$venv/.kubernetes-validate-$kv_version"
if [ ! -f "$marker" ]; then
  echo "validate-k8s: installing kubernetes-validate $kv_version into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$kv_version"
  touch "$marker"
fi

exec "$venv/bin/python" - "$dir" "$root" "$k8s_version" <<'PY'
import pathlib
import sys

import yaml
from kubernetes_validate import utils as kv

dir_, root, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
failures = []


def fail(where, msg):
    failures.append(f"{where}: {msg}")
    print(f"FAIL {where}: {msg}")


def stop_if_failed(note=""):
    if not failures:
        return
    print(f"validate-k8s: FAILED, {len(failures)} problem(s) in {rel(dir_)}{note}:")
    for f in failures:
        print(f"  {f}")
    sys.exit(1)


def rel(p):
    try:
        return str(p.resolve().relative_to(root))
    except ValueError:
        return str(p)


files = sorted(p for p in dir_.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))
if not files:
    print(f"FAIL {rel(dir_)}: no manifests (*.yaml, *.yml)")
    sys.exit(1)

# --- 1. schema -------------------------------------------------------------------------------
docs = []  # (where, document) of every document that passed its schema
for path in files:
    try:
        loaded = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as e:
        fail(rel(path), f"not valid YAML: {e}")
        continue
    n = 0
    for doc in loaded:
        if doc is None:  # an empty document, e.g. before the first ---
            continue
        n += 1
        where = f"{rel(path)} document {n}"
        if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind", "metadata")):
            fail(where, "not a Kubernetes object (apiVersion, kind and metadata are required)")
            continue
        name = f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
        where = f"{where} ({name})"
        try:
            got = kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            path_in_doc = ".".join(str(x) for x in e.path) or "(top)"
            fail(where, f"{path_in_doc}: {e.message}")
            continue
        except (kv.SchemaNotFoundError, kv.VersionNotSupportedError, kv.InvalidSchemaError) as e:
            fail(where, e.message)
            continue
        print(f"ok   {where}: valid against Kubernetes {got} (strict)")
        docs.append((where, doc))

# The checks below read the documents' structure; on documents that failed their schema they
# would only repeat the same problem in other words.
stop_if_failed(" (consistency not checked until the schemas pass)")

# --- 2. consistency --------------------------------------------------------------------------
def of_kind(kind):
    return [(w, d) for w, d in docs if d["kind"] == kind]


def argv(pod_spec):
    """Every container's command + args, joined (one container per pod here)."""
    out = []
    for c in pod_spec.get("containers", []):
        out += [str(a) for a in c.get("command", []) + c.get("args", [])]
    return out


def flag(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return None


def check(where, ok, what, got=""):
    if ok:
        print(f"ok   {where}: {what}")
    else:
        fail(where, f"check failed: {what}" + (f" (got {got})" if got else ""))


services = {d["metadata"]["name"]: d for _, d in of_kind("Service")}
peer_addrs = set()
sts_replicas = {}
for where, sts in of_kind("StatefulSet"):
    name, spec = sts["metadata"]["name"], sts["spec"]
    replicas = spec.get("replicas", 1)
    sts_replicas[name] = (spec["selector"].get("matchLabels"), replicas)
    args = argv(spec["template"]["spec"])
    peers = flag(args, "--peers")
    if peers is None:
        fail(where, "no --peers in the container command")
        continue
    entries = [e for e in peers.split(",") if e]
    check(where, len(entries) == replicas,
          f"replicas ({replicas}) equals the number of --peers entries ({len(entries)})")
    svc = spec.get("serviceName")
    want = [f"{i + 1}={name}-{i}.{svc}:" for i in range(len(entries))]
    check(where, all(e.startswith(w) for e, w in zip(entries, want)),
          f"--peers entry N is N={name}-<N-1>.{svc}:PORT, as --id-from-hostname needs",
          peers)
    peer_addrs |= {e.split("=", 1)[1] for e in entries}
    hs = services.get(svc, {}).get("spec", {})
    check(where, hs.get("clusterIP") == "None" and hs.get("publishNotReadyAddresses") is True,
          f"serviceName {svc!r} is a headless Service that publishes not-ready pods")

for where, pdb in of_kind("PodDisruptionBudget"):
    mu = pdb["spec"].get("maxUnavailable")
    for sts_labels, replicas in sts_replicas.values():
        if pdb["spec"]["selector"].get("matchLabels") == sts_labels:
            check(where, isinstance(mu, int) and 1 <= mu <= (replicas - 1) // 2,
                  f"maxUnavailable ({mu}) leaves a quorum of {replicas // 2 + 1} of {replicas} up")

workers, worker_out = None, None
for where, job in of_kind("Job"):
    spec = job["spec"]
    args = argv(spec["template"]["spec"])
    if args[:2] != ["loadgen", "worker"]:
        continue
    of = flag(args, "--of")
    if of is None or not of.isdigit():
        fail(where, f"loadgen worker needs --of N (got {of})")
        continue
    workers, worker_out = int(of), flag(args, "--out") or ""
    check(where, spec.get("completionMode") == "Indexed",
          "completionMode is Indexed (each pod gets its own --index)")
    check(where, spec.get("completions") == workers and spec.get("parallelism") == workers,
          f"--of ({workers}) equals completions ({spec.get('completions')}) "
          f"and parallelism ({spec.get('parallelism')})")
    target = flag(args, "--target") or ""
    check(where, not peer_addrs or set(t for t in target.split(",") if t) == peer_addrs,
          "--target names exactly the StatefulSet's --peers addresses", target)
    env = {e["name"]: e.get("value") for c in spec["template"]["spec"]["containers"]
           for e in c.get("env", [])}
    check(where, env.get("START") == "@START@",
          "env START is the @START@ placeholder that deploy/README.md's sed replaces",
          env.get("START"))

for where, job in of_kind("Job"):
    args = argv(job["spec"]["template"]["spec"])
    if args[:2] != ["loadgen", "merge"] or workers is None:
        continue
    inputs = []  # the positional arguments, before the first flag
    for a in args[2:]:
        if a.startswith("-"):
            break
        inputs.append(a)
    want = [worker_out.replace("$(JOB_COMPLETION_INDEX)", str(i)) for i in range(workers)]
    check(where, inputs == want,
          f"merges exactly the {len(want)} workers' folders", " ".join(inputs))

scenario = root / "scenarios" / "chat.yaml"
for where, cm in of_kind("ConfigMap"):
    text = (cm.get("data") or {}).get("chat.yaml")
    if text is None or not scenario.exists():
        continue
    check(where, text.rstrip() == scenario.read_text().rstrip(),
          "chat.yaml is a verbatim copy of scenarios/chat.yaml")

stop_if_failed()
print(f"validate-k8s: {len(docs)} documents in {len(files)} files valid "
      f"(Kubernetes {version}, strict) and consistent")
PY
