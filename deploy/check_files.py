#!/usr/bin/env python3
"""Structural checks of deploy/ that no schema covers, run by deploy/check.sh.

    python3 deploy/check_files.py kustomize|compose|grafana|dockerfile

Prints one line per problem as `path: message` and exits 1 if there is any.
"""
import json
import pathlib
import re
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
ROOT = DEPLOY.parent
problems = []


def problem(path, message):
    problems.append(f"{path.relative_to(ROOT)}: {message}")


def load_yaml_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def kustomize():
    """Every resource exists and every manifest in the folder is either a resource or the Job example."""
    k8s = DEPLOY / "kubernetes"
    path = k8s / "kustomization.yaml"
    (doc,) = load_yaml_docs(path)
    if doc.get("kind") != "Kustomization" or not str(doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
        problem(path, "not a kustomize Kustomization")
    resources = doc.get("resources", [])
    for r in resources:
        if not (k8s / r).is_file():
            problem(path, f"resource {r} does not exist")
    for gen in doc.get("configMapGenerator", []):
        for f in gen.get("files", []):
            if not (k8s / f.split("=")[-1]).is_file():
                problem(path, f"configMapGenerator {gen.get('name')}: file {f} does not exist")
    standalone = {"replay-job.yaml"}
    for manifest in sorted(k8s.glob("*.yaml")):
        if manifest.name == "kustomization.yaml":
            continue
        if manifest.name not in resources and manifest.name not in standalone:
            problem(manifest, "neither in kustomization.yaml's resources nor a known standalone example")
    # The Deployment mounts the ConfigMaps the kustomization makes, by the names it makes them.
    names = {d["metadata"]["name"] for r in resources for d in load_yaml_docs(k8s / r) if d.get("kind") == "ConfigMap"}
    names |= {g["name"] for g in doc.get("configMapGenerator", [])}
    for r in resources:
        for d in load_yaml_docs(k8s / r):
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for v in spec.get("volumes", []):
                cm = v.get("configMap", {}).get("name")
                if cm and cm not in names:
                    problem(k8s / r, f"volume {v['name']} mounts ConfigMap {cm}, which the kustomization does not make")


def compose():
    path = DEPLOY / "compose.yaml"
    (doc,) = load_yaml_docs(path)
    services = doc.get("services", {})
    for name in ("careguard", "bot", "prometheus", "grafana"):
        if name not in services:
            problem(path, f"service {name} missing")
    for name, svc in services.items():
        build = svc.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / build.get("context", ".")).resolve()
            if not (context / build.get("dockerfile", "Dockerfile")).is_file():
                problem(path, f"service {name}: dockerfile {build.get('dockerfile')} not found in {context}")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                if not (DEPLOY / source).exists():
                    problem(path, f"service {name}: bind mount source {source} does not exist")
            elif source not in doc.get("volumes", {}):
                problem(path, f"service {name}: named volume {source} not declared under volumes")
    bot = services.get("bot", {}).get("command", [])
    if "--bot-only" not in bot:
        problem(path, "service bot must run `careguard demo --bot-only`")
    upstream = services.get("careguard", {}).get("environment", {}).get("OPENAI_BASE_URL", "")
    listen = bot[bot.index("--bot-listen") + 1] if "--bot-listen" in bot else ""
    if not listen or not upstream.startswith(f"http://bot:{listen.rsplit(':', 1)[-1]}/"):
        problem(path, f"careguard's OPENAI_BASE_URL {upstream!r} does not point at the bot's --bot-listen {listen!r}")
    # Prometheus scrapes the careguard service's admin port and loads the alerts.
    prom = DEPLOY / "prometheus" / "prometheus.yml"
    (pdoc,) = load_yaml_docs(prom)
    targets = [t for job in pdoc.get("scrape_configs", []) if job.get("job_name") == "careguard"
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    if targets != ["careguard:9090"]:
        problem(prom, f"job careguard must scrape careguard:9090, scrapes {targets}")
    if "alerts.yaml" not in pdoc.get("rule_files", []):
        problem(prom, "rule_files must load alerts.yaml")


def grafana():
    path = DEPLOY / "grafana" / "careguard.json"
    try:
        dash = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        problem(path, f"invalid JSON: {e}")
        return
    for key in ("uid", "title", "panels", "schemaVersion", "templating"):
        if key not in dash:
            problem(path, f"no {key}")
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    ids = set()
    for p in dash.get("panels", []):
        title = p.get("title", "?")
        if p.get("id") in ids:
            problem(path, f"panel {title!r}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(k in g for k in "hwxy") or g["x"] + g["w"] > 24:
            problem(path, f"panel {title!r}: gridPos {g} outside the 24-column grid")
        if p.get("type") == "row":
            continue
        if not p.get("description"):
            problem(path, f"panel {title!r}: no description for the on-call reader")
        if not p.get("targets"):
            problem(path, f"panel {title!r}: no queries")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            if "careguard_" not in expr:
                problem(path, f"panel {title!r}: query {t.get('refId')} reads no careguard metric")
            for var in re.findall(r"\$(\w+)", expr):
                if not var.startswith("__") and var not in variables:
                    problem(path, f"panel {title!r}: query uses undefined variable ${var}")
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                problem(path, f"panel {title!r}: unbalanced brackets in {expr!r}")
    # Provisioning: the data source uid the dashboard's variable defaults to, and the dashboards path.
    (ds,) = load_yaml_docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    uids = {d.get("uid") for d in ds.get("datasources", [])}
    current = next((v.get("current", {}).get("value") for v in dash["templating"]["list"] if v["name"] == "datasource"), None)
    if current not in uids:
        problem(path, f"datasource variable defaults to {current!r}, provisioned uids are {sorted(uids)}")
    (prov,) = load_yaml_docs(DEPLOY / "grafana" / "provisioning" / "dashboards" / "careguard.yaml")
    if not any(p.get("options", {}).get("path") == "/var/lib/grafana/dashboards" for p in prov.get("providers", [])):
        problem(path, "dashboard provider does not read /var/lib/grafana/dashboards (compose mounts it there)")


def dockerfile():
    """The files the Dockerfile copies exist and are not excluded from the build context."""
    path = DEPLOY / "Dockerfile"
    ignore = [l.strip() for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for src in [w for w in words[1:-1] if not w.startswith("--")]:
            if not (ROOT / src).exists():
                problem(path, f"COPY source {src} does not exist in the repository")
            if src.split("/")[0] in ignore and "!" + src not in ignore:
                problem(path, f"COPY source {src} is excluded by Dockerfile.dockerignore")
    if not re.search(r"^USER (?!0|root)", text, re.M):
        problem(path, "the runtime stage must run as a non-root USER")
    if "--locked" not in text:
        problem(path, "cargo build must use --locked")


CHECKS = {"kustomize": kustomize, "compose": compose, "grafana": grafana, "dockerfile": dockerfile}

if __name__ == "__main__":
    for name in sys.argv[1:] or CHECKS:
        CHECKS[name]()
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)
