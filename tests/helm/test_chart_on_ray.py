"""The chart's scale-out serveConfigV2 deploys on real Ray Serve as KubeRay would submit it: Serve
takes its deployment overrides (autoscaling of the ingress and of the model), starts the ingress's
min_replicas, the replicas share the Ray actor store, and the real model answers through them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml

from tests.helm.chart import DEPLOY, by_kind, render
from tests.ray_nodes import LocalCluster, local_cluster, wait_for

pytestmark = pytest.mark.e2e

SMALL = yaml.safe_load((DEPLOY / "pools" / "cpu-default.yaml").read_text())["models"][0]


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with local_cluster() as c:
        yield c


def test_scale_out_values_deploy_on_ray_serve(cluster):
    pool = {"name": "chart-on-ray", "models": [SMALL], "auth": {"enabled": False}}
    values = {"pool": pool, "apiKeys": {"enabled": False},
              "serve": {"autoscaling": {"ingress": {"enabled": True, "config": {"min_replicas": 2, "max_replicas": 3}},
                                        "models": {"enabled": True, "config": {"min_replicas": 1, "max_replicas": 2}}}}}
    (rs,) = by_kind(render(values), "RayService")
    config = yaml.safe_load(rs["spec"]["serveConfigV2"])
    cluster.start("head", num_cpus=2, resources={}, head=True)
    cluster.wait_nodes(1)
    base = cluster.deploy(config)  # the chart's config; only the proxy's address is this machine's

    def deployments() -> dict:
        return cluster.get("/api/serve/applications/")["applications"]["tiergate"]["deployments"]

    def running(deployment: dict) -> int:
        return sum(r["state"] == "RUNNING" for r in deployment["replicas"])

    def two_ingress_replicas() -> dict | None:
        d = deployments()
        return d if running(d["ingress"]) == 2 else None

    model = f"model-{SMALL['name']}"
    got = wait_for("the ingress's min_replicas running", two_ingress_replicas, 120)
    ingress, served = got["ingress"]["deployment_config"], got[model]["deployment_config"]
    assert (ingress["autoscaling_config"]["min_replicas"], ingress["autoscaling_config"]["max_replicas"]) == (2, 3)
    assert (served["autoscaling_config"]["min_replicas"], served["autoscaling_config"]["max_replicas"]) == (1, 2)
    assert running(got[model]) == 1

    health = httpx.get(f"{base}/health", timeout=30).json()  # deploy waited for it to be ready
    assert health["state_store"] == {"name": "ray", "ready": True}  # several replicas: the shared store
    with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        for _ in range(4):  # through both ingress replicas, most likely
            answer = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=4)
            assert answer.model == SMALL["name"] and answer.choices[0].finish_reason in ("stop", "length")
