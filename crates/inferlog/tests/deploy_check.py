"""Checks deploy/ against itself: python deploy_check.py REPO_ROOT [OUT_DIR]

Parses every YAML document of deploy/kubernetes/*.yaml and deploy/Dockerfile, and checks that
they agree: the command the image runs, where the config is mounted, the data dir's volume,
the probes' path and port, the users, the Services' and the budget's selectors, the
kustomization's files.

Prints, for the Rust test (crates/inferlog/tests/deploy.rs) to check with the real parser:
  config PATH        each ConfigMap's inferlog.toml, written to a file under OUT_DIR
  env NAME VALUE     each INFERLOG_* variable a gateway container gets (env, envFrom of a
                     Secret in deploy/kubernetes, exports in its command), with its value or a
                     stand-in (fieldRef: the first pod's name)
Problems go to stderr, one line each; the exit status is 1 when there is any.
"""

import json
import os
import re
import sys
import tempfile
import tomllib

import yaml

ERRORS = []
WORKLOAD_KINDS = {"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


def error(where, message):
    ERRORS.append(f"deploy_check: {where}: {message}")


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(text):
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def exec_form(where, instruction, rest):
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        error(where, f"{instruction} must be in exec form (a JSON array), not `{rest}`")
        return None
    return value


def check_dockerfile(root):
    where = "deploy/Dockerfile"
    path = os.path.join(root, where)
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        error(where, f"cannot read: {e}")
        return None
    instructions = dockerfile_instructions(text)
    stages = []
    for word, rest in instructions:
        if word == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((word, rest))
    froms = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    if len(froms) < 2:
        error(where, "must be multi-stage (a build stage and a runtime stage)")
        return None

    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        rust_version = tomllib.load(f).get("workspace", {}).get("package", {}).get("rust-version")
    if rust_version and not froms[0].startswith(f"rust:{rust_version}"):
        error(where, f"the build stage is `{froms[0]}`; the workspace's rust-version is {rust_version} (want rust:{rust_version}-…)")
    build = " ".join(rest for word, rest in stages[0] if word == "RUN")
    if not re.search(r"cargo build\b[^&;]*--release", build) or "--locked" not in build or "-p inferlog" not in build:
        error(where, "the build stage must run `cargo build --release --locked -p inferlog`")

    final = {}
    for word, rest in stages[-1]:
        final.setdefault(word, []).append(rest)
    image = {"from": froms[-1]}
    entry = exec_form(where, "ENTRYPOINT", final["ENTRYPOINT"][-1]) if "ENTRYPOINT" in final else None
    cmd = exec_form(where, "CMD", final["CMD"][-1]) if "CMD" in final else None
    if not entry or len(entry) != 1 or os.path.basename(entry[0]) != "inferlog":
        error(where, f"ENTRYPOINT must be the inferlog binary alone, not {entry}")
    elif not any(entry[0] in rest.split() for rest in final.get("COPY", [])):
        error(where, f"the runtime stage does not COPY the binary to {entry[0]}")
    if not cmd or len(cmd) != 3 or cmd[:2] != ["serve", "--config"]:
        error(where, f'CMD must be ["serve", "--config", FILE], not {cmd}')
        cmd = None
    image["entrypoint"], image["cmd"] = entry, cmd
    user = (final.get("USER") or [""])[-1].split(":")[0]
    if not user.isdigit() or user == "0":
        error(where, f"USER must be a numeric non-root uid (for runAsNonRoot), not `{user}`")
    image["uid"] = int(user) if user.isdigit() else None
    volumes = []
    for rest in final.get("VOLUME", []):
        volumes += exec_form(where, "VOLUME", rest) if rest.startswith("[") else rest.split()
    image["volumes"] = volumes
    image["expose"] = {int(p.split("/")[0]) for rest in final.get("EXPOSE", []) for p in rest.split()}

    ignore_path = os.path.join(root, ".dockerignore")
    try:
        patterns = {line.strip().strip("/") for line in open(ignore_path, encoding="utf-8") if line.strip() and not line.startswith("#")}
        for needed in ("target", ".venv", ".git"):
            if needed not in patterns:
                error(".dockerignore", f"does not exclude {needed}/")
    except OSError:
        error(".dockerignore", "missing at the repository root (the build context would include target/ and .git/)")
    return image


# --- Kubernetes -------------------------------------------------------------------------------


def load_documents(kube_dir):
    docs = []
    for name in sorted(os.listdir(kube_dir)):
        if not name.endswith((".yaml", ".yml")):
            continue
        where = f"deploy/kubernetes/{name}"
        try:
            with open(os.path.join(kube_dir, name), encoding="utf-8") as f:
                parsed = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            error(where, "YAML does not parse: " + " ".join(str(e).split()))
            continue
        for doc in parsed:
            if doc is None:
                continue
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                error(where, "a document without apiVersion and kind")
                continue
            if doc["kind"] != "Kustomization" and not (doc.get("metadata") or {}).get("name"):
                error(where, f"a {doc['kind']} without metadata.name")
                continue
            docs.append((name, doc))
    return docs


def pod_template(doc):
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return spec.get("template") or {}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_number(port, container):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def listen_port(listen):
    host, _, port = (listen or "").rpartition(":")
    return host, int(port) if port.isdigit() else None


def is_gateway(container, image):
    if container.get("name") == "inferlog":
        return True
    return (container.get("image") or "").split("/")[-1].split(":")[0] == "inferlog"


def effective_argv(where, container, image):
    """The gateway's arguments after the binary, as the kubelet would run the image."""
    command, args = container.get("command"), container.get("args")
    if command is None:
        return args if args is not None else image["cmd"]
    if args is None:
        error(where, "`command` without `args` drops the image's CMD: give args too")
        return None
    script = " ".join(command)
    if command[:1] == image["entrypoint"]:
        return args
    if command[:2] == ["/bin/sh", "-c"] and re.search(r'exec\s+\S*inferlog\s+"\$@"', script):
        return args
    error(where, f"`command` {command} does not end by exec-ing the inferlog binary with the args")
    return None


def check_workloads(docs, image, configs, env_lines):
    by_kind = {}
    for file, doc in docs:
        if doc["kind"] != "Kustomization":
            by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = (file, doc)
    workloads = [(f, d) for f, d in docs if d["kind"] in WORKLOAD_KINDS]
    gateways = 0
    for file, doc in workloads:
        name = doc["metadata"]["name"]
        template = pod_template(doc)
        pod = template.get("spec") or {}
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        claims = {t["metadata"]["name"] for t in (doc.get("spec") or {}).get("volumeClaimTemplates") or []}
        replicas = (doc.get("spec") or {}).get("replicas", 1)
        for container in pod.get("containers") or []:
            if not is_gateway(container, image):
                continue
            gateways += 1
            where = f"deploy/kubernetes/{file}: {doc['kind']} {name}, container {container.get('name')}"
            argv = effective_argv(where, container, image)
            if argv is None:
                continue
            if image["cmd"] and argv != image["cmd"]:
                error(where, f"runs {argv}; the image's CMD is {image['cmd']}")
            if len(argv) != 3 or argv[:2] != ["serve", "--config"]:
                error(where, f"must run `serve --config FILE`, not {argv}")
                continue
            config_path = argv[2]
            mounts = container.get("volumeMounts") or []

            # The config file: a ConfigMap volume mounted so that mountPath/key is the path.
            toml_config, mounted_key = None, None
            for m in mounts:
                cm = (volumes.get(m.get("name")) or {}).get("configMap")
                if not cm:
                    continue
                cm_doc = by_kind.get("ConfigMap", {}).get(cm.get("name"), (None, {}))[1]
                items = {i["key"]: i["path"] for i in cm.get("items") or []}
                for key in items or (cm_doc.get("data") or {}):
                    rel = items.get(key, key)
                    sub = m.get("subPath")
                    at = m["mountPath"] if sub == rel else m["mountPath"].rstrip("/") + "/" + rel
                    if (sub is None or sub == rel) and at == config_path:
                        mounted_key = (cm.get("name"), key)
                        toml_config = configs.get(mounted_key)
            if mounted_key is None:
                error(where, f"{config_path} (the --config path) is not where any ConfigMap key is mounted")
                continue
            if toml_config is None:
                error(where, f"{config_path} is key `{mounted_key[1]}` of ConfigMap `{mounted_key[0]}`, which is not a TOML file described in deploy/kubernetes")
                continue

            # The data dir: its own volume, matching the image's VOLUME.
            data_dir = toml_config.get("data_dir")
            if data_dir is None:
                error(where, "the config sets no data_dir (it would be ./inferlog-data in the working directory)")
            else:
                if data_dir not in image["volumes"]:
                    error("deploy/Dockerfile", f"VOLUME {image['volumes']} does not declare the config's data_dir {data_dir}")
                mount = next((m for m in mounts if m.get("mountPath") == data_dir), None)
                if mount is None:
                    error(where, f"nothing is mounted at the config's data_dir {data_dir}")
                elif mount.get("readOnly"):
                    error(where, f"the data dir {data_dir} is mounted read-only")
                elif mount.get("name") in claims:
                    pass
                elif "emptyDir" in (volumes.get(mount.get("name")) or {}):
                    pass
                elif "persistentVolumeClaim" in (volumes.get(mount.get("name")) or {}) and replicas == 1:
                    pass
                else:
                    error(where, f"the data dir {data_dir} must be a volume of its own per replica (a volumeClaimTemplate, an emptyDir, or one claim with replicas: 1)")

            # Listen address, ports and probes.
            host, port = listen_port(toml_config.get("listen"))
            if port is None or host in ("127.0.0.1", "localhost", "[::1]"):
                error(where, f"listen = {toml_config.get('listen')!r} cannot be reached from outside the pod (want 0.0.0.0:PORT)")
                port = None
            if port is not None:
                if port not in image["expose"]:
                    error("deploy/Dockerfile", f"EXPOSE {sorted(image['expose'])} does not include the listen port {port}")
                if port not in [p.get("containerPort") for p in container.get("ports") or []]:
                    error(where, f"no containerPort {port} (the config's listen port)")
            for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if probe is None:
                    if probe_name != "startupProbe":
                        error(where, f"no {probe_name}")
                    continue
                http = probe.get("httpGet") or {}
                if http.get("path") != "/healthz":
                    error(where, f"{probe_name} must GET /healthz, not {http.get('path')!r}")
                if port is not None and port_number(http.get("port"), container) != port:
                    error(where, f"{probe_name} port {http.get('port')!r} is not the listen port {port}")

            # Users and the root filesystem.
            security = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
            if image["uid"] is not None and security.get("runAsUser") not in (None, image["uid"]):
                error(where, f"runAsUser {security.get('runAsUser')} is not the image's USER {image['uid']} (which owns the data dir)")
            if not security.get("runAsNonRoot"):
                error(where, "runAsNonRoot is not set")
            if security.get("readOnlyRootFilesystem") and not any(m.get("mountPath") == "/tmp" for m in mounts):
                error(where, "readOnlyRootFilesystem without a volume at /tmp (queries spill there)")
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace <= 30:
                error(where, f"terminationGracePeriodSeconds {grace} leaves no time after the 30 s drain for the last commit")

            # INFERLOG_* variables, for the real parser on the Rust side.
            for var in container.get("env") or []:
                env_name = var.get("name", "")
                if not env_name.startswith("INFERLOG_"):
                    continue
                if "value" in var:
                    value = str(var["value"])
                elif ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == "metadata.name":
                    value = f"{name}-0"
                else:
                    value = "placeholder"
                env_lines.setdefault(env_name, value)
            for source in container.get("envFrom") or []:
                ref = (source.get("secretRef") or {}).get("name")
                if ref is None:
                    continue
                found = by_kind.get("Secret", {}).get(ref)
                if found is None:
                    error(where, f"envFrom names Secret `{ref}`, which no file in deploy/kubernetes describes")
                    continue
                secret = found[1]
                for key, value in {**(secret.get("data") or {}), **(secret.get("stringData") or {})}.items():
                    if key.startswith("INFERLOG_"):
                        env_lines.setdefault(key, str(value) if key in (secret.get("stringData") or {}) else "placeholder")
            for text in (container.get("command") or []) + (container.get("args") or []):
                for env_name, value in re.findall(r"\b(INFERLOG_[A-Z0-9_]+)=(\S+)", text):
                    env_lines.setdefault(env_name, value)

        if doc["kind"] == "StatefulSet" and gateways:
            service = (doc.get("spec") or {}).get("serviceName")
            found = by_kind.get("Service", {}).get(service)
            if found is None:
                error(f"deploy/kubernetes/{file}", f"serviceName `{service}` is no Service in deploy/kubernetes")
    if not gateways:
        error("deploy/kubernetes", "no workload runs the inferlog image")
    return workloads


def check_selectors(docs, workloads):
    pods = []
    for file, doc in workloads:
        template = pod_template(doc)
        pods.append((file, doc, (template.get("metadata") or {}).get("labels") or {}, (template.get("spec") or {}).get("containers") or []))
        selector = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if doc["kind"] != "CronJob" and doc["kind"] != "Job" and not selects(selector, pods[-1][2]):
            error(f"deploy/kubernetes/{file}", f"{doc['kind']} {doc['metadata']['name']}: selector {selector} does not match its pod labels")
    for file, doc in docs:
        where = f"deploy/kubernetes/{file}: {doc['kind']} {(doc.get('metadata') or {}).get('name', '')}"
        if doc["kind"] == "Service":
            selector = (doc.get("spec") or {}).get("selector") or {}
            matched = [p for p in pods if selects(selector, p[2])]
            if not matched:
                error(where, f"selector {selector} matches no pods")
            if len({p[1]["metadata"]["name"] for p in matched}) > 1:
                error(where, f"selector {selector} matches the pods of several workloads")
            for port in (doc.get("spec") or {}).get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                for _, _, _, containers in matched:
                    if not any(port_number(target, c) is not None for c in containers):
                        error(where, f"targetPort {target!r} is no container port of the pods it selects")
        elif doc["kind"] == "PodDisruptionBudget":
            selector = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            matched = [p for p in pods if selects(selector, p[2])]
            if not matched:
                error(where, f"selector {selector} matches no pods")
            for _, workload, _, _ in matched:
                replicas = (workload.get("spec") or {}).get("replicas", 1)
                minimum = (doc.get("spec") or {}).get("minAvailable")
                if isinstance(minimum, int) and minimum >= replicas:
                    error(where, f"minAvailable {minimum} with {replicas} replicas blocks every voluntary eviction")


def check_kustomization(kube_dir, docs):
    for file, doc in docs:
        if doc["kind"] != "Kustomization":
            continue
        for resource in doc.get("resources") or []:
            if not os.path.exists(os.path.join(kube_dir, resource)):
                error(f"deploy/kubernetes/{file}", f"resource {resource} does not exist")
            if "example" in resource:
                error(f"deploy/kubernetes/{file}", f"lists {resource}, which holds placeholders")


def main():
    if len(sys.argv) not in (2, 3):
        print("usage: deploy_check.py REPO_ROOT [OUT_DIR]", file=sys.stderr)
        return 2
    root = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) == 3 else tempfile.mkdtemp(prefix="inferlog-deploy-")
    kube_dir = os.path.join(root, "deploy", "kubernetes")
    image = check_dockerfile(root)
    docs = load_documents(kube_dir)

    configs, config_lines, env_lines = {}, [], {}
    for file, doc in docs:
        if doc["kind"] != "ConfigMap":
            continue
        for key, text in (doc.get("data") or {}).items():
            if not key.endswith(".toml"):
                continue
            name = doc["metadata"]["name"]
            try:
                configs[(name, key)] = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                error(f"deploy/kubernetes/{file}: ConfigMap {name}, {key}", f"TOML does not parse: {e}")
                continue
            path = os.path.join(out_dir, f"{os.path.splitext(file)[0]}-{name}-{key}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            config_lines.append(f"config {path}")
    if not configs:
        error("deploy/kubernetes", "no ConfigMap holds an inferlog.toml")
    if image is not None and image["cmd"] is not None and image["entrypoint"]:
        workloads = check_workloads(docs, image, configs, env_lines)
        check_selectors(docs, workloads)
    check_kustomization(kube_dir, docs)

    for line in config_lines + [f"env {k} {v}" for k, v in sorted(env_lines.items())]:
        print(line)
    for line in ERRORS:
        print(line, file=sys.stderr)
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
