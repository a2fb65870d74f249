"""The several-replica examples: deploy/compose/ha.yaml and deploy/kubernetes/ha-deployment.yaml.

Each file is parsed as its tool would (YAML, anchors and merge keys included), and the config
each one carries is loaded by the real loader with its secret files in place: the replicas
are built from the repository's image, know who they are, read the database URL from a secret
and keep nothing on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import Config, DeliveryConfig, load_config
from poller.state.models import Lease
from tests.e2e.test_deploy import DOCKERFILE, instructions_named, parse_dockerfile, stages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "ha.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes" / "ha-deployment.yaml"
REPLICAS = ("poller-a", "poller-b")
URL = "postgresql://poller:pw-deploy-ha@postgres:5432/poller"


def final_stage() -> list[tuple[str, str]]:
    return stages(parse_dockerfile(DOCKERFILE.read_text()))[-1]


def image_cmd() -> list[str]:
    return list(json.loads(instructions_named(final_stage(), "CMD")[-1]))


def image_port() -> int:
    return int(instructions_named(final_stage(), "EXPOSE")[-1])


def image_uid() -> int:
    return int(instructions_named(final_stage(), "USER")[-1].split(":")[0])


def load_with_secrets(text: str, secrets_dir: str, tmp_path: Path, env: dict[str, str]) -> Config:
    """Load ``text`` as the real loader would, its secret folder ``secrets_dir`` in tmp_path."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name, value in {
        "state_url": URL,
        "twilio_auth_token": "0123456789abcdef0123456789abcdef",
        "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }.items():
        (folder / name).write_text(value + "\n")
    assert secrets_dir in text
    config = tmp_path / "config.yaml"
    config.write_text(text.replace(secrets_dir, str(folder)))
    return load_config(config, env=env)


def secret_files(text: str, secrets_dir: str) -> set[str]:
    """The secret names every ``*_file: SECRETS_DIR/NAME`` of a config reads."""
    data = yaml.safe_load(text)
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("_file") and isinstance(item, str):
                    assert item.startswith(secrets_dir + "/"), (key, item)
                    found.add(item.removeprefix(secrets_dir + "/"))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return found


# ---- docker compose ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose_config_text(compose: dict[str, Any], replica: str) -> str:
    (mount,) = compose["services"][replica]["configs"]
    assert mount["target"] == image_cmd()[-1]  # where the image's CMD reads its config
    source = compose["configs"][mount["source"]]["file"]
    return (COMPOSE.parent / str(source)).read_text()


def test_compose_runs_postgres_and_two_replicas_of_the_repository_image(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", *REPLICAS}
    assert services["postgres"]["image"].startswith("postgres:")
    for replica in REPLICAS:
        build = services[replica]["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
        assert services[replica]["command"] == image_cmd()
        assert services[replica]["init"] is True


def test_compose_replicas_have_ids_of_their_own(compose: dict[str, Any]) -> None:
    ids = [compose["services"][r]["environment"]["POLLER_REPLICA_ID"] for r in REPLICAS]
    assert ids == list(REPLICAS)


def test_compose_replicas_wait_for_a_healthy_database_and_keep_nothing_on_disk(
    compose: dict[str, Any],
) -> None:
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "postgres_password" in postgres["secrets"]
    for replica in REPLICAS:
        service = compose["services"][replica]
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert "volumes" not in service
        assert service["read_only"] is True
        assert service["stop_signal"] == "SIGTERM"
        grace = float(service["stop_grace_period"].removesuffix("s"))
        assert grace > DeliveryConfig().shutdown_timeout_seconds


def test_compose_config_reads_the_database_url_from_a_secret_each_replica_mounts(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    text = compose_config_text(compose, REPLICAS[0])
    assert all(compose_config_text(compose, r) == text for r in REPLICAS)
    for replica in REPLICAS:
        mounted = set(compose["services"][replica]["secrets"])
        assert secret_files(text, "/run/secrets") <= mounted
        assert mounted <= set(compose["secrets"])
    env = {
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_SERVICE_SID": "KS" + "1" * 32,
        "WEBHOOK_URL": "https://example.com/hooks/proxy",
    }
    config = load_with_secrets(text, "/run/secrets", tmp_path, env)
    assert config.state.backend == "postgres"
    assert config.state.url is not None and config.state.url.get_secret_value() == URL
    assert config.http is not None and config.http.port == image_port()
    assert config.http.host == "0.0.0.0"  # noqa: S104  # the image's healthcheck and -p need it


# ---- Kubernetes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]
    by_kind = {d["kind"]: d for d in documents}
    assert len(by_kind) == len(documents)
    return by_kind


def pod_spec(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["Deployment"]["spec"]["template"]["spec"]
    return spec


def test_kubernetes_deployment_runs_two_replicas_named_after_their_pods(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment = manifests["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod_spec(manifests)["containers"]
    assert container["args"] == image_cmd()
    (replica_id,) = [e for e in container["env"] if e["name"] == "POLLER_REPLICA_ID"]
    assert replica_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def test_kubernetes_probes_readiness_on_readyz_and_liveness_on_healthz(
    manifests: dict[str, dict[str, Any]],
) -> None:
    (container,) = pod_spec(manifests)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == image_port()


def test_kubernetes_pods_have_no_volume_but_their_config_and_secret(
    manifests: dict[str, dict[str, Any]],
) -> None:
    spec = pod_spec(manifests)
    kinds = [next(k for k in volume if k != "name") for volume in spec["volumes"]]
    assert sorted(kinds) == ["configMap", "secret"]
    assert spec["securityContext"]["runAsUser"] == image_uid()
    assert spec["securityContext"]["fsGroup"] == image_uid()  # the secret files' group
    assert spec["terminationGracePeriodSeconds"] > DeliveryConfig().shutdown_timeout_seconds
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_kubernetes_config_reads_the_database_url_from_the_mounted_secret(
    manifests: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    spec = pod_spec(manifests)
    (container,) = spec["containers"]
    kind_of = {v["name"]: "secret" if "secret" in v else "configMap" for v in spec["volumes"]}
    mounts = {kind_of[m["name"]]: m["mountPath"] for m in container["volumeMounts"]}
    (config_volume,) = [v for v in spec["volumes"] if "configMap" in v]
    config_map = manifests["ConfigMap"]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert f"{mounts['configMap']}/config.yaml" == image_cmd()[-1]
    text = config_map["data"]["config.yaml"]
    assert secret_files(text, mounts["secret"]) == {
        "state_url",
        "twilio_auth_token",
        "webhook_secret",
    }
    config = load_with_secrets(text, mounts["secret"], tmp_path, {})
    assert config.state.backend == "postgres" and config.state.lease_seconds == 15
    assert config.http is not None and config.http.port == image_port()
    assert len(config.watch) == 2  # two Services: one for each replica to own


# ---- docs/ha.md ----------------------------------------------------------------------------

HA_DOC = ROOT / "docs" / "ha.md"


def test_ha_doc_links_both_examples_and_is_linked_where_state_is_described() -> None:
    text = HA_DOC.read_text()
    for example in (COMPOSE, KUBERNETES, COMPOSE.parent / "config.yaml"):
        assert f"(../{example.relative_to(ROOT)})" in text
    assert "(docs/ha.md)" in (ROOT / "README.md").read_text()
    assert "(ha.md)" in (ROOT / "docs" / "architecture.md").read_text()
    # The sizing section holds measured numbers, with the command that measured them.
    assert "bench/bench_ha.py" in text and "_TBD_" not in text


def test_ha_doc_shows_the_leases_as_state_show_prints_them() -> None:
    text = HA_DOC.read_text()
    block = text.split('"leases": [', 1)[1].split("]", 1)[0]
    shown = json.loads(f"[{block}]")
    assert shown
    assert all(set(lease) == set(Lease("KS", None, 0, None).to_json()) for lease in shown)
