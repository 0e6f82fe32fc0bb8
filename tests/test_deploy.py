"""Deployment artefacts: Dockerfiles (hadolint), the container entry point (run for real, without
Docker), Kubernetes manifests (kubernetes-validate, pinned Kubernetes version), the compose stack,
Prometheus rules and the Grafana dashboard, whose metric names are checked against a live /metrics.

No Docker engine is needed: the images are linted, not built (see docs/deployment.md)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import NEU_SAMPLE, SHIPPED_FP32, SHIPPED_INT8

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30"
# Series that Prometheus itself makes (not the service): allowed in rules and dashboards.
PROMETHEUS_BUILTIN = {"up"}
CRD_GROUPS = ("monitoring.coreos.com/",)


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        assert found, f"{name} not installed: pip install -e '.[dev]' provides it"
        return found
    return str(path)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


# ------------------------------------------------------------------------------------ Dockerfiles


def test_dockerfiles_present() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile", "Dockerfile.gpu", "Dockerfile.jetson"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), "--failure-threshold", "warning",
         "--no-color", str(dockerfile)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 0, f"hadolint {dockerfile.name}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint step can fail: a Dockerfile with known warnings is rejected under our config."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python app.py\n")
    proc = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), "--failure-threshold", "warning",
         "--no-color", str(bad)], capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # :latest tag


def test_hadolint_config_ignores_are_justified() -> None:
    text = (ROOT / ".hadolint.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg["failure-threshold"] == "warning"
    for rule in cfg.get("ignored", []):
        # each ignored rule has a comment block right above it explaining why
        block = text.split(f"- {rule}")[0].rstrip().splitlines()
        assert block and block[-1].lstrip().startswith("#"), f"{rule} ignored without a reason"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runtime_contract(dockerfile: Path) -> None:
    ins = dockerfile_instructions(dockerfile)
    froms = [a for k, a in ins if k == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    runtime = ins[max(i for i, (k, _) in enumerate(ins) if k == "FROM"):]  # the last stage
    kinds = {k for k, _ in runtime}
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runtime runs as non-root"
    assert any(k == "VOLUME" and "/data" in a for k, a in runtime)
    assert any(k == "HEALTHCHECK" and "docker-healthcheck" in a for k, a in runtime)
    assert any(k == "ENTRYPOINT" and "docker-entrypoint" in a for k, a in runtime)
    assert any(k == "COPY" and "models/weights/" in a and ".onnx" in a for k, a in runtime), "model inside"
    assert "EXPOSE" in kinds
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "INSPECT_DATA_DIR=/data" in env and "INSPECT_MODEL_PATH=/opt/models/" in env
    model = re.search(r"INSPECT_MODEL_PATH=/opt/models/(\S+)", env).group(1)
    assert model in {SHIPPED_FP32.name, SHIPPED_INT8.name}
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert "torch" not in runs, "images carry the base install only"


def test_cpu_dockerfile_base_install_only() -> None:
    ins = dockerfile_instructions(ROOT / "docker" / "Dockerfile")
    assert ins[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm")
    runs = [a for k, a in ins if k == "RUN" and "pip install" in a]
    assert len(runs) == 1 and '".[postgres,mqtt]"' in runs[0]


def test_gpu_dockerfiles_enable_tensorrt() -> None:
    for name in ("Dockerfile.gpu", "Dockerfile.jetson"):
        ins = dockerfile_instructions(ROOT / "docker" / name)
        env = " ".join(a for k, a in ins if k == "ENV")
        assert "INSPECT_PROVIDERS=TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider" in env
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    assert "nvidia/cuda:12." in gpu and "cudnn-runtime" in gpu
    assert re.search(r"ARG ORT_GPU_VERSION=\d+\.\d+\.\d+", gpu)
    assert re.search(r"ARG TENSORRT_VERSION=\d+\.\d+", gpu)
    jetson = (ROOT / "docker" / "Dockerfile.jetson").read_text()
    assert "nvcr.io/nvidia/l4t-jetpack:r36" in jetson and "ARG ORT_PACKAGE=" in jetson


def test_dockerignore_keeps_context_small() -> None:
    patterns = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")}
    assert {".venv", "data", "runs", ".pytest_cache", ".git"} <= patterns
    # what the Dockerfiles COPY must not be ignored
    for needed in ("app", "models", "pyproject.toml", "README.md", "docker"):
        assert needed not in patterns


def test_entrypoint_script_syntax() -> None:
    script = str(ROOT / "docker" / "entrypoint.sh")
    proc = subprocess.run(["sh", "-n", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "defect-inspect db upgrade" in text and "exec defect-inspect serve --host" in text
    assert 'exec defect-inspect ingest --host "${HOST:-0.0.0.0}"' in text


# --------------------------------------------------------------------- the service, started for real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    database_url: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def service_env(tmp: Path, model: Path, database_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECT_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HOST="127.0.0.1",
        PORT=str(port),
        INSPECT_DATABASE_URL=database_url,
        INSPECT_MODEL_PATH=str(model),
        INSPECT_PROVIDERS="CPUExecutionProvider",
        INSPECT_DATA_DIR=str(tmp / "data"),
        INSPECT_AUTH_ENABLED="false",
        INSPECT_METRICS_PUBLIC="true",
        INSPECT_INTRA_OP_THREADS="1",
    )
    return env


def start(argv: list[str], env: dict[str, str], port: int, log: Path) -> Service:
    fh = log.open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=log.parent, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Service(proc, port, log)


def wait_ready(svc: Service, path: str = "/readyz", timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.proc.poll() is not None:
            raise AssertionError(f"service exited with {svc.proc.returncode}:\n{svc.output()}")
        try:
            status, _ = http_get(svc.url + path, timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{path} not ready after {timeout}s:\n{svc.output()}")


def stop(svc: Service) -> None:
    if svc.proc.poll() is None:
        os.killpg(svc.proc.pid, signal.SIGTERM)
        try:
            svc.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Service]:
    """The container's start path without Docker: docker/entrypoint.sh `serve` runs the migrations,
    then `defect-inspect serve`, on SQLite in a temporary folder."""
    tmp = tmp_path_factory.mktemp("deploy-live")
    port = free_port()
    url = f"sqlite:///{tmp / 'inspect.db'}"
    env = service_env(tmp, tiny_model_path, url, port)
    svc = start(["sh", str(ROOT / "docker" / "entrypoint.sh"), "serve"], env, port, tmp / "serve.log")
    svc.database_url = url
    try:
        wait_ready(svc)
        yield svc
    finally:
        stop(svc)


def test_entrypoint_migrates_then_serves(live_service: Service) -> None:
    assert http_get(live_service.url + "/healthz")[0] == 200
    assert http_get(live_service.url + "/readyz")[0] == 200
    from app.db import migrate

    # the entry point applied the migrations before serving: the database is at the head revision
    assert migrate.current_revision(live_service.database_url) == migrate.head_revision(
        live_service.database_url)


def test_docker_healthcheck_script(live_service: Service) -> None:
    script = str(ROOT / "docker" / "healthcheck.py")
    ok = subprocess.run([sys.executable, script], env={**os.environ, "PORT": str(live_service.port)},
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run([sys.executable, script], env={**os.environ, "PORT": str(free_port())},
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "not ready" in down.stderr


@pytest.fixture(scope="module")
def exported_metric_names(live_service: Service) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(live_service.url + "/metrics")
    assert status == 200, body[:500]
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "untyped": ("",),
    }
    for family in text_string_to_metric_families(body.decode()):
        # labelled families with no children yet still announce their name and type
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "delta", "deriv", "by", "without",
    "histogram_quantile", "clamp_min", "clamp_max", "and", "or", "unless", "on", "ignoring", "group_left",
    "group_right", "label_values", "offset", "bool", "abs", "topk", "bottomk", "le", "absent", "time",
    "vector", "scalar", "avg_over_time", "max_over_time", "min_over_time", "changes", "resets", "inf",
    "predict_linear",
}


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers, grouping labels and functions removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    names = set()
    for tok in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if tok.lower() in PROMQL_WORDS or re.fullmatch(r"\d*e\d*", tok):
            continue
        names.add(tok)
    return names


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "inspection.json").read_text())


def dashboard_exprs() -> list[str]:
    exprs = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            exprs.append(re.sub(r"label_values\((\w+),.*\)", r"\1", q))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_metric_name_extraction() -> None:
    assert metric_names_in(
        'histogram_quantile(0.99, sum by (le, provider) (rate(inspect_inference_seconds_bucket[5m])))'
    ) == {"inspect_inference_seconds_bucket"}
    assert metric_names_in('sum(inspect_journal_pending) > 0 and up{job=~"a.*"} == 0') == {
        "inspect_journal_pending", "up"}
    assert metric_names_in('inspect_camera_up{camera=~"$camera"} * 60') == {"inspect_camera_up"}


def test_dashboard_and_alerts_query_only_exported_metrics(exported_metric_names: set[str]) -> None:
    queried: dict[str, set[str]] = {}
    for expr in dashboard_exprs():
        for name in metric_names_in(expr):
            queried.setdefault(name, set()).add("dashboard")
    for rule in alert_rules():
        for name in metric_names_in(rule["expr"]):
            queried.setdefault(name, set()).add(f"alert {rule['alert']}")
    assert queried, "no metric names found in the dashboard or the rules"
    missing = {n: sorted(w) for n, w in queried.items()
               if n not in exported_metric_names and n not in PROMETHEUS_BUILTIN}
    assert not missing, f"queried but not exported by the service's /metrics: {missing}"


def test_required_panels_and_alerts_present() -> None:
    dash_names = set().union(*(metric_names_in(e) for e in dashboard_exprs()))
    for needed in ("inspect_frames_total", "inspect_inspections_total", "inspect_frames_dropped_total",
                   "inspect_inference_seconds_bucket", "inspect_pipeline_latency_seconds_bucket",
                   "inspect_defects_total", "inspect_camera_up", "inspect_db_write_seconds_bucket"):
        assert needed in dash_names, f"dashboard lacks {needed}"
    alert_names = set().union(*(metric_names_in(r["expr"]) for r in alert_rules()))
    for needed in ("inspect_camera_up", "inspect_frames_dropped_total",
                   "inspect_pipeline_latency_seconds_bucket", "inspect_db_up", "inspect_journal_pending"):
        assert needed in alert_names, f"alert rules lack {needed}"


# --------------------------------------------------------------------- Prometheus and Grafana files


def test_alert_rules_well_formed() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_prometheus_config() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["inspect-api"]["metrics_path"] == "/metrics"
    assert jobs["inspect-api"]["static_configs"][0]["targets"] == ["api:8000"]
    # every job name matches the up{job=~...} alert
    up_rule = next(r for r in alert_rules() if r["alert"] == "InspectTargetDown")
    pattern = re.search(r'job=~"([^"]+)"', up_rule["expr"]).group(1)
    assert all(re.fullmatch(pattern, name) for name in jobs)


def test_grafana_dashboard_and_provisioning() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    ds = datasource["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    ds_var = next(v for v in dash["templating"]["list"] if v["type"] == "datasource")
    assert ds_var["current"]["value"] == ds["uid"]
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] in ("${datasource}", ds["uid"])
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for word in ("frames in", "frames out", "dropped", "inference", "pipeline", "defects", "yield",
                 "camera up", "db write"):
        assert word in titles, f"no panel about {word!r}"
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "inspection.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert f"./grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]


# ------------------------------------------------------------------------------------ compose


def test_compose_stack() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "api", "ingest", "prometheus", "grafana"} <= set(services)
    declared_volumes = set(compose["volumes"])
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in declared_volumes, f"{name} uses undeclared volume {src}"
    for name in ("db", "api", "ingest", "mosquitto", "prometheus", "grafana"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["api"]["environment"]["INSPECT_MQTT_HOST"] == "${INSPECT_MQTT_HOST:-mosquitto}"
    api = services["api"]
    assert (DEPLOY / api["build"]["context"] / api["build"]["dockerfile"]).resolve() == (
        ROOT / "docker" / "Dockerfile")
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert "inspect-data:/data" in api["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert services["ingest"]["command"] == ["ingest"]
    assert services["ingest"]["image"] == api["image"]
    db_url = api["environment"]["INSPECT_DATABASE_URL"]
    assert db_url.startswith("postgresql+psycopg://") and "@db:5432/" in db_url
    assert api["environment"]["INSPECT_METRICS_PUBLIC"] == "true"
    cams = [v for v in services["ingest"]["volumes"] if v.endswith(":ro") and "cameras" in v]
    target = cams[0].split(":")[1]
    assert services["ingest"]["environment"]["INSPECT_CAMERAS_FILE"] == target


def test_cameras_examples_validate() -> None:
    from app.ingest.config import CamerasConfigError, load_cameras, parse_cameras

    cfg = load_cameras(DEPLOY / "cameras.example.yaml")
    assert len(cfg.cameras) >= 2
    assert {c.buffer for c in cfg.cameras} >= {"drop-oldest", "block"}
    for doc in load_yaml_docs(K8S / "configmap.yaml"):
        for key, text in doc.get("data", {}).items():
            if key.endswith(".yaml"):
                parse_cameras(text, f"configmap {doc['metadata']['name']}/{key}")
    with pytest.raises(CamerasConfigError, match="unknown key"):
        parse_cameras("cameras:\n  - id: a\n    source: 0\n    bogus: 1\n")


# ------------------------------------------------------------------------------------ Kubernetes


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def base_resources() -> list[dict[str, Any]]:
    return [doc for p in k8s_files() for doc in load_yaml_docs(p)]


def validate_builtin(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validate_supports_pinned_version() -> None:
    from kubernetes_validate.utils import all_versions

    assert any(v.startswith(K8S_VERSION + ".") for v in all_versions())


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    assert listed == {p.name for p in k8s_files()}
    gpu = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert gpu["resources"] == [".."]
    for patch in gpu["patches"]:
        assert (K8S / "gpu" / patch["path"]).exists()


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_manifest_validates(path: Path) -> None:
    docs = load_yaml_docs(path)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            # kubernetes-validate ships schemas for built-in kinds only; a CRD (ServiceMonitor) is
            # checked structurally in test_servicemonitor_matches_services instead.
            continue
        validate_builtin(doc)


def test_kubernetes_validate_rejects_a_broken_manifest() -> None:
    import kubernetes_validate

    doc = copy.deepcopy(next(d for d in base_resources() if d["kind"] == "Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(doc)


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in base_resources() if d["kind"] == kind]


def test_api_deployment_probes_resources_hpa() -> None:
    (dep,) = by_kind("Deployment")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["args"] == ["serve"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    env_from = {next(iter(e.values()))["name"] for e in c["envFrom"]}
    assert {"inspect-settings", "inspect-database"} <= env_from
    (svc,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "inspect-api"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_settings_secret_and_migration_job() -> None:
    (secret,) = by_kind("Secret")
    assert secret["stringData"]["INSPECT_DATABASE_URL"].startswith("postgresql+psycopg://")
    settings = next(c for c in by_kind("ConfigMap") if c["metadata"]["name"] == "inspect-settings")
    assert settings["data"]["INSPECT_MIGRATE_ON_START"] == "false"
    (job,) = by_kind("Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["migrate"]  # docker/entrypoint.sh: `defect-inspect db upgrade`
    assert "migrate)" in (ROOT / "docker" / "entrypoint.sh").read_text()


def test_ingest_statefulset_pinned_to_camera_nodes() -> None:
    (sts,) = by_kind("StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    assert spec["nodeSelector"] and spec["tolerations"]
    assert sts["spec"]["replicas"] == 1
    (c,) = spec["containers"]
    assert c["args"] == ["ingest"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "cameras")
    assert env["INSPECT_CAMERAS_FILE"] == mount["mountPath"] + "/cameras.yaml"
    cm_name = next(v for v in spec["volumes"] if v["name"] == "cameras")["configMap"]["name"]
    cm = next(c for c in by_kind("ConfigMap") if c["metadata"]["name"] == cm_name)
    assert "cameras.yaml" in cm["data"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    headless = next(s for s in by_kind("Service") if s["metadata"]["name"] == sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True


def strategic_merge(base: Any, patch: Any) -> Any:
    """The subset of kustomize's strategic merge the GPU patch uses: maps merge, lists of named items
    (containers, env, volumes) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            idx = next((n for n, b in enumerate(out) if b["name"] == item["name"]), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = strategic_merge(out[idx], item)
        return out
    return copy.deepcopy(patch)


def test_gpu_overlay_requests_a_gpu_and_validates() -> None:
    (patch,) = load_yaml_docs(K8S / "gpu" / "ingest-gpu.yaml")
    (sts,) = [d for d in by_kind(patch["kind"]) if d["metadata"]["name"] == patch["metadata"]["name"]]
    merged = strategic_merge(sts, patch)
    validate_builtin(merged)
    spec = merged["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["INSPECT_PROVIDERS"].startswith("TensorrtExecutionProvider")
    assert env["INSPECT_CAMERAS_FILE"]  # base env kept by the merge
    gpu = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert c["image"] in {i["name"] for i in gpu["images"]}


def test_servicemonitor_matches_services() -> None:
    (sm,) = by_kind("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    selector = sm["spec"]["selector"]["matchLabels"]
    services = [s for s in by_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in services} >= {"inspect-api", "inspect-ingest"}
    for ep in sm["spec"]["endpoints"]:
        assert ep["path"] == "/metrics"
        for s in services:
            assert ep["port"] in {p["name"] for p in s["spec"]["ports"]}


# ------------------------------------------------------------- two services, one PostgreSQL database

NEU_IMAGES = NEU_SAMPLE / "images"  # the sample shipped in the package


@pytest.fixture()
def fresh_postgres_url() -> Iterator[str]:
    """A new, empty database on the server of INSPECT_TEST_POSTGRES_URL, dropped afterwards."""
    base = os.environ.get("INSPECT_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("INSPECT_TEST_POSTGRES_URL is not set")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"inspect_deploy_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def post_frame(base_url: str, image: Path, frame_uid: str, camera_id: str) -> tuple[int, dict[str, Any]]:
    query = urllib.parse.urlencode({"frame_uid": frame_uid, "camera_id": camera_id, "line": "deploy-test",
                                    "part_id": f"part-{frame_uid}"})
    req = urllib.request.Request(f"{base_url}/api/v1/inspections?{query}", data=image.read_bytes(),
                                 headers={"Content-Type": "image/jpeg"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def post_review(base_url: str, defect_id: int, action: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{base_url}/api/v1/defects/{defect_id}/review",
                                 data=json.dumps({"action": action, "note": "deploy test"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.postgres
def test_two_services_share_one_postgres(tmp_path: Path, tiny_model_path: Path,
                                         fresh_postgres_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import create_engine, text

    from app.db import migrate

    # 1. both instances migrate at the same moment (as two containers starting together would)
    procs = []
    for i in range(2):
        env = service_env(tmp_path / f"m{i}", tiny_model_path, fresh_postgres_url, 0)
        procs.append(subprocess.Popen([str(BIN / "defect-inspect"), "db", "upgrade"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"concurrent `defect-inspect db upgrade` failed:\n{out}"
    engine = create_engine(fresh_postgres_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [migrate.head_revision(fresh_postgres_url)]

        # 2. two API processes on the same database take uploads concurrently
        services = []
        try:
            for i in range(2):
                port = free_port()
                (tmp_path / f"s{i}").mkdir()
                env = service_env(tmp_path / f"s{i}", tiny_model_path, fresh_postgres_url, port)
                services.append(start([str(BIN / "defect-inspect"), "serve", "--host", "127.0.0.1",
                                       "--port", str(port)], env, port, tmp_path / f"s{i}" / "serve.log"))
            for svc in services:
                wait_ready(svc)

            frames = sorted(NEU_IMAGES.glob("*.jpg"))[:40]
            assert len(frames) == 40, f"dataset missing at {NEU_IMAGES}"
            jobs = []
            for n, frame in enumerate(frames):
                jobs.append((services[n // 20].url, frame, f"deploy-{n:03d}"))
                if n % 20 < 5:
                    # also sent to the other instance at the same moment: the same frame_uid
                    # arriving twice must be stored once (idempotent replay)
                    jobs.append((services[1 - n // 20].url, frame, f"deploy-{n:03d}"))
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda j: (j[2], *post_frame(j[0], j[1], j[2], "deploy-cam")), jobs))
            logs = "\n".join(svc.output() for svc in services)
            for uid, status, body in results:
                assert status in (200, 201), f"{uid}: HTTP {status} {body}\n{logs}"
                assert body["frame_uid"] == uid
            created = [uid for uid, status, _ in results if status == 201]
            assert sorted(created) == sorted({uid for uid, _, _ in results}), "each frame created once"
            ids_by_uid: dict[str, set[int]] = {}
            for uid, _, body in results:
                ids_by_uid.setdefault(uid, set()).add(body["id"])
            assert all(len(ids) == 1 for ids in ids_by_uid.values()), "a replay returned another row"

            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT frame_uid, id, defect_count FROM inspections WHERE line = 'deploy-test'")).all()
                defect_rows = conn.execute(text(
                    "SELECT inspection_id, count(*) FROM defects GROUP BY inspection_id")).all()
            assert len(rows) == 40 and len({r.frame_uid for r in rows}) == 40, "lost or duplicated rows"
            assert {r.frame_uid: r.id for r in rows} == {u: next(iter(i)) for u, i in ids_by_uid.items()}
            per_inspection = dict(defect_rows)
            for r in rows:
                assert per_inspection.get(r.id, 0) == r.defect_count

            # 3. operators on both instances review the same defects at the same time: every review
            # is kept, and they serialise (row lock): the second one starts from the first one's result
            with engine.connect() as conn:
                defect_ids = conn.execute(text(
                    "SELECT d.id FROM defects d JOIN inspections i ON i.id = d.inspection_id "
                    "WHERE i.line = 'deploy-test' ORDER BY d.id")).scalars().all()[:10]
            assert defect_ids, "the tiny model found no defect in the bright frames"
            review_jobs = [(services[k].url, d, action) for d in defect_ids
                           for k, action in ((0, "confirm"), (1, "reject"))]
            with ThreadPoolExecutor(max_workers=8) as pool:
                reviews = list(pool.map(lambda j: post_review(*j), review_jobs))
            assert all(status == 200 for status, _ in reviews), reviews
            with engine.connect() as conn:
                audit = conn.execute(text(
                    "SELECT defect_id, before_status, after_status FROM defect_reviews "
                    "WHERE defect_id = ANY(:ids) ORDER BY id"), {"ids": list(defect_ids)}).all()
                final = dict(conn.execute(text("SELECT id, review_status FROM defects WHERE id = ANY(:ids)"),
                                          {"ids": list(defect_ids)}).all())
            for d in defect_ids:
                chain = [(a.before_status, a.after_status) for a in audit if a.defect_id == d]
                assert len(chain) == 2, f"defect {d}: {chain}"
                assert chain[0][0] == "pending" and chain[1][0] == chain[0][1], f"defect {d}: {chain}"
                assert {chain[0][1], chain[1][1]} == {"confirmed", "rejected"}
                assert final[d] == chain[1][1]
        finally:
            for svc in services:
                stop(svc)
    finally:
        engine.dispose()


def test_entrypoint_ingest_serves_health_and_camera_metrics(tmp_path: Path, tiny_model_path: Path) -> None:
    """`migrate` then `ingest` through docker/entrypoint.sh, as the compose ingest service and the
    Kubernetes Job + StatefulSet run them: the camera series appear on the port Prometheus scrapes."""
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    env = service_env(tmp_path, tiny_model_path, f"sqlite:///{tmp_path / 'inspect.db'}", port)
    entry = ["sh", str(ROOT / "docker" / "entrypoint.sh")]
    mig = subprocess.run([*entry, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert mig.returncode == 0, mig.stdout + mig.stderr
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text("cameras:\n  - id: deploy-sim\n    line: deploy\n    buffer: drop-oldest\n"
                       "    simulator: {fps: 5, width: 128, height: 96, seed: 3}\n")
    env["INSPECT_CAMERAS_FILE"] = str(cameras)
    env["HOST"] = "127.0.0.1"
    svc = start([*entry, "ingest"], env, port, tmp_path / "ingest.log")
    try:
        wait_ready(svc, "/healthz")
        deadline = time.monotonic() + 60
        while True:
            status, body = http_get(svc.url + "/metrics")
            assert status == 200
            samples = {(s.name, s.labels.get("camera"), s.labels.get("stage")): s.value
                       for f in text_string_to_metric_families(body.decode()) for s in f.samples}
            captured = samples.get(("inspect_frames_total", "deploy-sim", "captured"), 0)
            if captured > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert captured > 0, svc.output()
        assert ("inspect_camera_up", "deploy-sim", None) in samples, svc.output()
        # the stage the Grafana "frames in" panel and the drop alert divide by
        assert 'stage="captured"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
    finally:
        stop(svc)


def test_windows_service_configs() -> None:
    import xml.etree.ElementTree as ET

    svc = ET.parse(DEPLOY / "windows" / "defect-inspect.xml").getroot()
    assert svc.tag == "service" and svc.findtext("id") == "defect-inspect"
    assert svc.findtext("executable").endswith("defect-inspect.exe")
    assert svc.findtext("arguments").startswith("serve --host")
    assert svc.find("prestart").findtext("arguments") == "db upgrade"
    env = {e.get("name"): e.get("value") for e in svc.findall("env")}
    assert env["INSPECT_PROVIDERS"] == "DmlExecutionProvider,CPUExecutionProvider"
    ps1 = (DEPLOY / "windows" / "install-nssm.ps1").read_text()
    assert "INSPECT_PROVIDERS=DmlExecutionProvider,CPUExecutionProvider" in ps1 and "db upgrade" in ps1
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "onnxruntime-directml" in pyproject and "sys_platform == 'win32'" in pyproject
