"""deploy/kubernetes/: the example overlay renders with kustomize, passes the Kubernetes 1.30 schemas strictly, and
its Prometheus scrape config gives every target to exactly one of the StatefulSet's replicas."""

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import load_config
from tests.helpers import missing
from tests.paths import ROOT_DIR

OVERLAY = ROOT_DIR / "deploy" / "kubernetes" / "overlays" / "example"
VALIDATE = Path(shutil.which("kubernetes-validate") or ROOT_DIR / ".venv" / "bin" / "kubernetes-validate")


@pytest.fixture(scope="module")
def rendered() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl is not installed (kubectl kustomize renders the manifests)")
    result = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _resources(rendered: str) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in yaml.safe_load_all(rendered)}


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(VALIDATE), "--strict", "--kubernetes-version", "1.30.0", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_the_rendered_manifests_pass_the_kubernetes_schemas_strictly(rendered: str, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(rendered)
    result = _validate(tmp_path / "good.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(_resources(rendered)) == ["ConfigMap", "Secret", "Service", "StatefulSet"]
    # Strict: a field Kubernetes does not know fails, so the pass above means something.
    (tmp_path / "bad.yaml").write_text(rendered.replace("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"))
    assert _validate(tmp_path / "bad.yaml").returncode != 0


def test_the_statefulset_runs_locked_down_replicas_probed_on_healthy_and_ready(rendered: str) -> None:
    pod = _resources(rendered)["StatefulSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/etc/sqlprobe", "/etc/sqlprobe-passwords"}
    assert not [mount for mount in container["volumeMounts"] if "subPath" in mount]  # rotated secrets arrive in place


def test_the_configmaps_targets_load_with_the_shipped_query_library_and_the_secrets_files(
    rendered: str, tmp_path: Path
) -> None:
    resources = _resources(rendered)
    # The Secret's keys as the pod sees them, mounted at /etc/sqlprobe-passwords/.
    for key, encoded in resources["Secret"]["data"].items():
        (tmp_path / key).write_bytes(base64.b64decode(encoded))
    targets = tmp_path / "targets.yml"
    targets.write_text(
        resources["ConfigMap"]["data"]["targets.yml"].replace("/etc/sqlprobe-passwords/", f"{tmp_path}/")
    )
    config = load_config(targets, ROOT_DIR / "app" / "config" / "queries.yml", environ={})
    assert sorted(config.targets) == ["orders-db", "users-db"]


def test_the_scrape_config_has_one_hashmod_job_per_replica_and_promtool_accepts_it(rendered: str) -> None:
    replicas = _resources(rendered)["StatefulSet"]["spec"]["replicas"]
    scrape_file = OVERLAY / "prometheus-scrape.yml"
    jobs = [
        job for job in yaml.safe_load(scrape_file.read_text())["scrape_configs"] if job.get("metrics_path") == "/probe"
    ]
    assert len(jobs) == replicas == 3
    remainders = []
    for ordinal, job in enumerate(jobs):
        hashmod, keep = job["relabel_configs"][:2]
        assert (hashmod["action"], hashmod["modulus"], keep["action"]) == ("hashmod", replicas, "keep")
        remainders.append(int(keep["regex"]))
        replica = f"sqlprobe-{ordinal}.sqlprobe.monitoring.svc:9104"
        assert job["http_sd_configs"] == [{"url": f"http://{replica}/sd"}]
        assert {"target_label": "__address__", "replacement": replica} in job["relabel_configs"]
    assert remainders == list(range(replicas))
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "config", str(scrape_file)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
