#!/usr/bin/env python3
"""Checks a `helm template` render of deploy/helm/aliexpress (run by deploy/local/helm-check).

Usage: check_rendered.py --expect default|all-features [--names src/names.rs]
                         [--rules deploy/helm/aliexpress/files/aliexpress.rules.yml]
                         [--every-variable .env.example] RENDER.yaml
       check_rendered.py --self-test --expect ... RENDER.yaml
       check_rendered.py --every-variable .env.example RENDER.yaml

Asserts what the chart promises, whatever its values: the four roles run the right
subcommands; every Deployment has readiness and liveness probes on endpoints the binary serves,
a termination grace period above the role's drain bound, a non-root, read-only, capability-free
container; every role has a PodDisruptionBudget and a metrics Service that select its pods; the
migration Job is a pre-install/pre-upgrade hook running `migrate`; every Secret and volume a pod
names exists (rendered, or the existing Secret of the values). `--expect all-features` adds the
optional objects (KEDA on the topics and groups of src/names.rs, HPA, ServiceMonitor,
certificate mounts, the existing Secret, and the PrometheusRule: the groups of
files/aliexpress.rules.yml as they are, selecting roles by a `component` label that the
ServiceMonitor sets, with components the chart has). Duplicate keys in a mapping are errors
(the API server refuses them). Exit status 1 with one line per failure.

--self-test breaks a copy of the render in several ways and fails unless every breakage is
reported, so a check that cannot fail does not go unnoticed.

--every-variable checks a render made with `env` (the values' map for every role) holding every
variable of .env.example: each role's container gets each of them, after the chart's own
entries (so the map's value wins where the chart sets the same name).
"""

import argparse
import copy
import os
import re
import sys

import yaml

ROLES = {
    # component: (subcommand prefix, drain bound after SIGTERM in seconds; see values.yaml)
    "api": (["serve"], 15),
    "relay": (["process-outbox", "--follow"], 45),
    "command-consumer": (["run-product-consumer"], 30),
    "projection": (["run-product-event-consumer"], 40),
}
CONSUMERS = {
    # component: (topic constant, group constant) in src/names.rs
    "command-consumer": ("PRODUCT_COMMANDS_TOPIC", "PRODUCT_COMMAND_GROUP"),
    "projection": ("PRODUCT_EVENTS_TOPIC", "PRODUCT_PROJECTION_GROUP"),
}
TLS_DIR = "/etc/aliexpress/tls/"
# The alert rules the PrometheusRule must carry as they are (the local Prometheus loads the same file).
RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aliexpress", "files", "aliexpress.rules.yml")
# What ci/all-features-values.yaml sets and the render must reflect.
ALL_FEATURES = {
    "existing_secret": "catalog-connections",
    "namespace": "staging.",
    "group_override": {"command-consumer": "staging-commands-v2"},
    "tls_volumes": {"tls-postgres", "tls-kafka", "tls-opensearch", "tls-redis"},
    "rule_label_release": "kube-prometheus-stack",
}


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(text):
    return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d]


def names_rs(path):
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', open(path).read()))
    for topic, group in CONSUMERS.values():
        for c in (topic, group):
            if c not in consts:
                raise SystemExit(f"{path}: no constant {c}")
    return consts


def component(obj):
    return obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def hook_events(obj):
    ann = obj.get("metadata", {}).get("annotations") or {}
    return {e.strip() for e in ann.get("helm.sh/hook", "").split(",") if e.strip()}


def rule_components(groups):
    """Values of `component` the rules' expressions select (component="x" or component=~"x|y")."""
    found = set()
    for g in groups or []:
        for r in g.get("rules") or []:
            for m in re.finditer(r'component\s*=~?\s*"([^"]*)"', str(r.get("expr", ""))):
                found.update(v for v in m.group(1).split("|") if v)
    return found


def check(docs, expect, names, rules=None):
    errors = []
    err = errors.append
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    deployments = {component(d): d for d in by_kind.get("Deployment", [])}
    secrets = by_kind.get("Secret", [])
    plain_secrets = {s["metadata"]["name"] for s in secrets if not hook_events(s)}
    existing = ALL_FEATURES["existing_secret"] if expect == "all-features" else None

    def pod_checks(kind, name, pod, allowed_secrets):
        spec = pod.get("spec", {})
        psc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            err(f"{kind} {name}: automountServiceAccountToken is not false")
        volumes = {v.get("name") for v in spec.get("volumes", [])}
        containers = spec.get("containers") or []
        if not containers:
            err(f"{kind} {name}: no containers")
        for c in containers:
            csc = c.get("securityContext") or {}
            if not (psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True):
                err(f"{kind} {name}: runAsNonRoot is not true")
            if csc.get("readOnlyRootFilesystem") is not True:
                err(f"{kind} {name}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                err(f"{kind} {name}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                err(f"{kind} {name}: capabilities do not drop ALL")
            mounts = {m.get("name"): m.get("mountPath") for m in c.get("volumeMounts", [])}
            for m in mounts:
                if m not in volumes:
                    err(f"{kind} {name}: volumeMount {m} has no volume")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref.get("name") not in allowed_secrets:
                    err(f"{kind} {name}: env {e['name']} reads Secret {ref.get('name')}, which is neither rendered nor the existing one")
                value = str(e.get("value", ""))
                if value.startswith(TLS_DIR) and not any(
                    p and value.startswith(p.rstrip("/") + "/") for p in mounts.values()
                ):
                    err(f"{kind} {name}: env {e['name']}={value} is under no volumeMount")
        return containers

    # The four roles.
    for comp, (subcommand, bound) in ROLES.items():
        d = deployments.get(comp)
        if d is None:
            err(f"no Deployment for the {comp} role")
            continue
        name = d["metadata"]["name"]
        spec = d.get("spec", {})
        pod = spec.get("template", {})
        pod_labels = pod.get("metadata", {}).get("labels", {})
        if not selects(spec.get("selector", {}).get("matchLabels"), pod_labels):
            err(f"Deployment {name}: its selector does not select its own pods")
        allowed = plain_secrets | ({existing} if existing else set())
        containers = pod_checks("Deployment", name, pod, allowed)
        if not containers:
            continue
        c = containers[0]
        args = [str(a) for a in c.get("args") or []]
        if args[: len(subcommand)] != subcommand:
            err(f"Deployment {name}: args {args} do not start with {subcommand}")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
            p = c.get(probe)
            if not p:
                err(f"Deployment {name}: no {probe}")
                continue
            get = p.get("httpGet") or {}
            want_path, want_port = (path, "http") if comp == "api" else ("/metrics", "metrics")
            if get.get("path") != want_path or get.get("port") != want_port:
                err(f"Deployment {name}: {probe} is {get}, expected GET {want_path} on port {want_port}")
            if get.get("port") not in ports:
                err(f"Deployment {name}: {probe} port {get.get('port')} is not a container port")
        flag = "--metrics-bind"
        if flag not in args or not args[args.index(flag) + 1 :]:
            err(f"Deployment {name}: no {flag}")
        elif not args[args.index(flag) + 1].endswith(f":{ports.get('metrics')}"):
            err(f"Deployment {name}: {flag} {args[args.index(flag) + 1]} is not the metrics port {ports.get('metrics')}")
        grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
        need = bound
        if comp == "api":
            cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
            if len(cmd) != 2 or cmd[0] != "sleep" or not str(cmd[1]).isdigit() or int(cmd[1]) <= 0:
                err(f"Deployment {name}: no preStop sleep (got {cmd})")
            else:
                need += int(cmd[1])
        if not isinstance(grace, int):
            err(f"Deployment {name}: no terminationGracePeriodSeconds")
        elif grace <= need:
            err(f"Deployment {name}: terminationGracePeriodSeconds {grace} is not above its drain bound {need}")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
                if selects(p.get("spec", {}).get("selector", {}).get("matchLabels"), pod_labels)]
        if not pdbs:
            err(f"no PodDisruptionBudget selects the {comp} pods")
        for p in pdbs:
            ps = p.get("spec", {})
            if ("minAvailable" in ps) == ("maxUnavailable" in ps):
                err(f"PodDisruptionBudget {p['metadata']['name']}: needs exactly one of minAvailable, maxUnavailable")
        services = [s for s in by_kind.get("Service", [])
                    if selects(s.get("spec", {}).get("selector"), pod_labels)]
        if not any(pt.get("targetPort") == "metrics" for s in services for pt in s["spec"].get("ports", [])):
            err(f"no Service exposes the metrics port of the {comp} pods")
        if comp == "api" and not any(pt.get("targetPort") == "http" for s in services for pt in s["spec"].get("ports", [])):
            err("no Service exposes the API's http port")
        scaled = any(h["spec"]["scaleTargetRef"]["name"] == name
                     for h in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", []))
        if scaled and "replicas" in spec:
            err(f"Deployment {name}: sets replicas although an autoscaler owns them")
        if not scaled and not isinstance(spec.get("replicas"), int):
            err(f"Deployment {name}: no replicas and no autoscaler")

    # The migration hook.
    jobs = [j for j in by_kind.get("Job", []) if component(j) == "migrate"]
    if len(jobs) != 1:
        err(f"expected one migration Job, found {len(jobs)}")
    for j in jobs:
        name = j["metadata"]["name"]
        if not {"pre-install", "pre-upgrade"} <= hook_events(j):
            err(f"Job {name}: not a pre-install,pre-upgrade hook ({hook_events(j)})")
        weight = int((j["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0"))
        earlier_hook_secrets = {
            s["metadata"]["name"] for s in secrets
            if {"pre-install", "pre-upgrade"} <= hook_events(s)
            and int(s["metadata"]["annotations"].get("helm.sh/hook-weight", "0")) < weight
        }
        allowed = earlier_hook_secrets | ({existing} if existing else set())
        containers = pod_checks("Job", name, j["spec"]["template"], allowed)
        if containers and [str(a) for a in containers[0].get("args") or []] != ["migrate"]:
            err(f"Job {name}: args are not [migrate]")

    # Optional objects.
    scaled_objects = {component(s): s for s in by_kind.get("ScaledObject", [])}
    if expect == "default":
        for kind in ("ScaledObject", "HorizontalPodAutoscaler", "ServiceMonitor", "TriggerAuthentication", "PrometheusRule"):
            if by_kind.get(kind):
                err(f"default values render a {kind}, which should be off by default")
        if not plain_secrets:
            err("default values render no Secret of the chart's")
    else:
        ns = ALL_FEATURES["namespace"]
        for comp, (topic_c, group_c) in CONSUMERS.items():
            so = scaled_objects.get(comp)
            if so is None:
                err(f"no ScaledObject for {comp}")
                continue
            if so["spec"]["scaleTargetRef"]["name"] != deployments.get(comp, {}).get("metadata", {}).get("name"):
                err(f"ScaledObject {so['metadata']['name']}: does not target the {comp} Deployment")
            triggers = so["spec"].get("triggers") or [{}]
            meta = triggers[0].get("metadata", {})
            want_topic = ns + names[topic_c]
            want_group = ALL_FEATURES["group_override"].get(comp, ns + names[group_c])
            if triggers[0].get("type") != "kafka" or meta.get("topic") != want_topic or meta.get("consumerGroup") != want_group:
                err(f"ScaledObject {so['metadata']['name']}: trigger {triggers[0].get('type')} on "
                    f"{meta.get('topic')}/{meta.get('consumerGroup')}, expected kafka on {want_topic}/{want_group}")
            ref = (triggers[0].get("authenticationRef") or {}).get("name")
            if not ref or ref not in {t["metadata"]["name"] for t in by_kind.get("TriggerAuthentication", [])}:
                err(f"ScaledObject {so['metadata']['name']}: authenticationRef {ref} is not rendered")
        hpas = by_kind.get("HorizontalPodAutoscaler", [])
        if not any(h["spec"]["scaleTargetRef"]["name"] == deployments.get("api", {}).get("metadata", {}).get("name") for h in hpas):
            err("no HorizontalPodAutoscaler targets the API")
        monitors = by_kind.get("ServiceMonitor", [])
        if not monitors:
            err("no ServiceMonitor")
        for m in monitors:
            selected = [s for s in by_kind.get("Service", [])
                        if selects(m["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
            ports = {e.get("port") for e in m["spec"].get("endpoints", [])}
            covered = {component(s) for s in selected
                       if ports & {p.get("name") for p in s["spec"].get("ports", [])}}
            if covered != set(ROLES):
                err(f"ServiceMonitor {m['metadata']['name']}: scrapes {sorted(c for c in covered if c)}, expected every role")
            # The alert rules select roles by `component`: every endpoint must set it from the pod.
            for e in m["spec"].get("endpoints", []):
                if not any(r.get("targetLabel") == "component"
                           and r.get("sourceLabels") == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
                           and r.get("action", "replace") == "replace"
                           for r in e.get("relabelings") or []):
                    err(f"ServiceMonitor {m['metadata']['name']}: endpoint {e.get('port')} does not set `component` from the pod's app.kubernetes.io/component")
        prules = by_kind.get("PrometheusRule", [])
        if len(prules) != 1:
            err(f"expected one PrometheusRule, found {len(prules)}")
        for pr in prules:
            name = pr["metadata"]["name"]
            groups = (pr.get("spec") or {}).get("groups")
            if rules is not None and groups != rules.get("groups"):
                err(f"PrometheusRule {name}: its groups differ from {RULES} (one source: render them from the file)")
            unknown = rule_components(groups) - set(ROLES)
            if unknown:
                err(f"PrometheusRule {name}: selects component(s) {sorted(unknown)} the chart has no role for")
            if not any(r.get("alert") for g in groups or [] for r in g.get("rules") or []):
                err(f"PrometheusRule {name}: no alert")
            if (pr["metadata"].get("labels") or {}).get("release") != ALL_FEATURES["rule_label_release"]:
                err(f"PrometheusRule {name}: prometheusRule.labels not applied")
        if plain_secrets:
            err(f"an existing Secret is named, yet the chart renders Secret(s) {sorted(plain_secrets)}")
        for comp, d in deployments.items():
            vols = {v["name"] for v in d["spec"]["template"]["spec"].get("volumes", [])}
            if comp == "api" and not ALL_FEATURES["tls_volumes"] <= vols:
                err(f"Deployment {d['metadata']['name']}: certificate volumes {sorted(ALL_FEATURES['tls_volumes'] - vols)} missing")
    return errors


def mutations(expect):
    """Named ways to break a render; each must be reported."""

    def deploy(docs, comp):
        return next(d for d in docs if d.get("kind") == "Deployment" and component(d) == comp)

    def container(docs, comp):
        return deploy(docs, comp)["spec"]["template"]["spec"]["containers"][0]

    def drop_kind(docs, kind, comp):
        docs[:] = [d for d in docs if not (d.get("kind") == kind and component(d) == comp)]

    m = {
        "relay without readiness probe": lambda d: container(d, "relay").pop("readinessProbe"),
        "api readiness on /health/live": lambda d: container(d, "api")["readinessProbe"]["httpGet"].update(path="/health/live"),
        "projection without liveness probe": lambda d: container(d, "projection").pop("livenessProbe"),
        "no PDB for the projection": lambda d: drop_kind(d, "PodDisruptionBudget", "projection"),
        "command consumer without grace period": lambda d: deploy(d, "command-consumer")["spec"]["template"]["spec"].pop("terminationGracePeriodSeconds"),
        "relay grace period below its drain": lambda d: deploy(d, "relay")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
        "api without preStop": lambda d: container(d, "api").pop("lifecycle"),
        "api running as root": lambda d: (deploy(d, "api")["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False),
                                          container(d, "api")["securityContext"].update(runAsNonRoot=False)),
        "relay with a writable root": lambda d: container(d, "relay")["securityContext"].update(readOnlyRootFilesystem=False),
        "api keeping capabilities": lambda d: container(d, "api")["securityContext"].update(capabilities={}),
        "consumer running the wrong subcommand": lambda d: container(d, "command-consumer").update(args=["run-product-event-consumer"]),
        "relay not following": lambda d: container(d, "relay").update(args=["process-outbox", "--metrics-bind", "0.0.0.0:9464"]),
        "a Secret that does not exist": lambda d: next(e for e in container(d, "relay")["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"])["valueFrom"]["secretKeyRef"].update(name="nope"),
        "migration not a pre-upgrade hook": lambda d: next(j for j in d if j.get("kind") == "Job")["metadata"]["annotations"].update({"helm.sh/hook": "post-install"}),
        "no migration Job": lambda d: drop_kind(d, "Job", "migrate"),
        "no metrics Service for the relay": lambda d: drop_kind(d, "Service", "relay"),
    }
    if expect == "all-features":
        m.update({
            "KEDA on the wrong topic": lambda d: next(s for s in d if s.get("kind") == "ScaledObject" and component(s) == "projection")["spec"]["triggers"][0]["metadata"].update(topic="product.events"),
            "KEDA on the wrong group": lambda d: next(s for s in d if s.get("kind") == "ScaledObject" and component(s) == "command-consumer")["spec"]["triggers"][0]["metadata"].update(consumerGroup="product-command-consumer-group"),
            "no HPA": lambda d: d.__setitem__(slice(None), [x for x in d if x.get("kind") != "HorizontalPodAutoscaler"]),
            "replicas beside KEDA": lambda d: deploy(d, "projection")["spec"].update(replicas=2),
            "no certificate mount": lambda d: container(d, "api").update(volumeMounts=[v for v in container(d, "api")["volumeMounts"] if v["name"] != "tls-kafka"]),
            "no PrometheusRule": lambda d: d.__setitem__(slice(None), [x for x in d if x.get("kind") != "PrometheusRule"]),
            "PrometheusRule drifted from the rules file": lambda d: next(x for x in d if x.get("kind") == "PrometheusRule")["spec"]["groups"][0]["rules"][0].update(expr="vector(1)"),
            "PrometheusRule on a component the chart lacks": lambda d: next(x for x in d if x.get("kind") == "PrometheusRule")["spec"]["groups"][0]["rules"].append({"alert": "X", "expr": 'up{component="worker"} == 0'}),
            "ServiceMonitor without the component label": lambda d: next(x for x in d if x.get("kind") == "ServiceMonitor")["spec"]["endpoints"][0].pop("relabelings"),
        })
    else:
        m["an optional object on by default"] = lambda d: d.append(
            {"kind": "ServiceMonitor", "metadata": {"name": "x"}, "spec": {"selector": {}, "endpoints": []}})
        m["a PrometheusRule on by default"] = lambda d: d.append(
            {"kind": "PrometheusRule", "metadata": {"name": "x"}, "spec": {"groups": []}})
    return m


def self_test(docs, expect, names, rules=None):
    failures = []
    base = check(docs, expect, names, rules)
    if base:
        failures.append(f"the unbroken render already fails: {base}")
    for label, breakage in mutations(expect).items():
        broken = copy.deepcopy(docs)
        breakage(broken)
        if not check(broken, expect, names, rules):
            failures.append(f"not detected: {label}")
    try:
        load("a: 1\na: 2\n")
        failures.append("not detected: a duplicate key")
    except yaml.YAMLError:
        pass
    return failures


def env_example_names(path):
    """Variables .env.example lists, set or commented out (as the binary's own test reads it)."""
    names = []
    for line in open(path).read().splitlines():
        m = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m and m.group(1) not in names:
            names.append(m.group(1))
    return names


# The value --every-variable renders each variable with (through the values' `env` map).
MARKER = "from-values-env"


def every_variable(docs, names):
    failures = []
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if not deployments:
        failures.append("no Deployment rendered")
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            effective = {}
            for e in c.get("env") or []:
                # Kubernetes: of two entries with one name, the later one wins.
                effective[e["name"]] = e.get("value")
            missing = [n for n in names if n not in effective]
            if missing:
                failures.append(f"Deployment {d['metadata']['name']}: env lacks {missing}")
            shadowed = [n for n in names if n in effective and effective[n] != MARKER]
            if shadowed:
                failures.append(f"Deployment {d['metadata']['name']}: the chart overrides the env map's {shadowed}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--expect", choices=["default", "all-features"])
    ap.add_argument("--every-variable", metavar="ENV_EXAMPLE")
    ap.add_argument("--names", default="src/names.rs")
    ap.add_argument("--rules", default=RULES)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("render")
    a = ap.parse_args()
    try:
        docs = load(open(a.render).read())
    except yaml.YAMLError as e:
        print(f"{a.render}: {e}", file=sys.stderr)
        return 1
    if a.every_variable:
        variables = env_example_names(a.every_variable)
        problems = every_variable(docs, variables)
        for p in problems:
            print(f"{a.render}: {p}", file=sys.stderr)
        if problems:
            return 1
        print(f"{a.render}: every one of {len(variables)} variables of {a.every_variable} reaches every role")
        return 0
    if not a.expect:
        ap.error("--expect is required")
    names = names_rs(a.names)
    rules = load(open(a.rules).read())[0]
    if a.self_test:
        problems = self_test(docs, a.expect, names, rules)
        what = f"self-test ({len(mutations(a.expect)) + 1} breakages)"
    else:
        problems = check(docs, a.expect, names, rules)
        what = f"{len(docs)} objects"
    for p in problems:
        print(f"{a.render}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{a.render}: {what} ok ({a.expect})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
