"""Jobs and pods run by the test node agent: completion, failure, placement on accelerator pools,
memory limits, preemption and node removal, all through the real Job controller."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.fixtures import NodeAgentClient, wait_for

pytestmark = pytest.mark.cluster

GPU_SCHEDULING = {
    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
TPU_SCHEDULING = {
    "nodeSelector": {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "2x2",
    },
    "tolerations": [{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def python_command(source: str) -> list[str]:
    """Return a container command that runs `source` with the tests' Python (the image is ignored)."""
    return [sys.executable, "-c", source]


def job_manifest(
    name: str,
    command: list[str],
    *,
    backoff_limit: int = 0,
    resources: dict[str, Any] | None = None,
    pod_spec: dict[str, Any] | None = None,
    job_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "unused:latest", "command": command}
    if resources is not None:
        container["resources"] = resources
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container], **(pod_spec or {})}},
            **(job_spec or {}),
        },
    }


def job_condition(batch: Any, namespace: str, name: str) -> str | None:
    """Return "Complete" or "Failed" once the Job has that condition set to True, else None."""
    job = batch.read_namespaced_job(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def job_pods(core: Any, namespace: str, name: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}").items)


def unschedulable_message(core: Any, namespace: str, name: str) -> str | None:
    """Return the message of the pod's PodScheduled=False condition, or None while it has none."""
    conditions = core.read_namespaced_pod(name, namespace).status.conditions or []
    failed = (c for c in conditions if c.type == "PodScheduled" and c.status == "False")
    return next((str(condition.message) for condition in failed), None)


def terminated_state(pod: Any) -> Any:
    statuses = pod.status.container_statuses or []
    assert len(statuses) == 1, f"expected one container status, received {statuses}"
    terminated = statuses[0].state.terminated
    assert terminated is not None, f"container of pod {pod.metadata.name} has not terminated: {statuses[0].state}"
    return terminated


# The API fixtures are typed Any: the tests pass plain dict manifests, and the client's models
# declare every field Optional even where the server always sets it.


@pytest.fixture
def core(api_client: client.ApiClient) -> Any:
    return client.CoreV1Api(api_client)


@pytest.fixture
def batch(api_client: client.ApiClient) -> Any:
    return client.BatchV1Api(api_client)


@pytest.fixture
def added_nodes(node_agent: NodeAgentClient) -> Iterator[list[str]]:
    """Names of the nodes a test adds; they are removed after the test."""
    nodes: list[str] = []
    yield nodes
    for node in nodes:
        if node in node_agent.nodes():
            node_agent.remove_node(node)


def test_job_pod_runs_to_complete(node_agent: NodeAgentClient, core: Any, batch: Any, namespace: str) -> None:
    source = "import os; print('hello from', os.environ['POD_NAME'], os.environ['GREETING'])"
    manifest = job_manifest("hello", python_command(source))
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "GREETING", "value": "and welcome"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    batch.create_namespaced_job(namespace, manifest)

    condition = wait_for(lambda: job_condition(batch, namespace, "hello"), timeout=30, what="Job hello to finish")

    assert condition == "Complete"
    (pod,) = job_pods(core, namespace, "hello")
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name in node_agent.nodes()
    assert terminated_state(pod).exit_code == 0
    assert node_agent.pod_log(namespace, pod.metadata.name, "main") == f"hello from {pod.metadata.name} and welcome\n"


def test_job_failure_reports_exit_code(node_agent: NodeAgentClient, core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("fails", python_command("raise SystemExit(3)")))

    condition = wait_for(lambda: job_condition(batch, namespace, "fails"), timeout=30, what="Job fails to finish")

    assert condition == "Failed"
    (pod,) = job_pods(core, namespace, "fails")
    assert pod.status.phase == "Failed"
    terminated = terminated_state(pod)
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"


def test_pod_failure_policy_matches_exit_code(node_agent: NodeAgentClient, batch: Any, namespace: str) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    manifest = job_manifest(
        "policy", python_command("raise SystemExit(42)"), backoff_limit=5, job_spec={"podFailurePolicy": policy}
    )
    batch.create_namespaced_job(namespace, manifest)

    wait_for(lambda: job_condition(batch, namespace, "policy"), timeout=30, what="Job policy to finish")

    job = batch.read_namespaced_job("policy", namespace)
    failed = next(condition for condition in job.status.conditions if condition.type == "Failed")
    assert failed.reason == "PodFailurePolicy"
    assert job.status.failed == 1


def test_gpu_pod_waits_for_gpu_node(
    node_agent: NodeAgentClient,
    core: Any,
    batch: Any,
    namespace: str,
    added_nodes: list[str],
) -> None:
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    manifest = job_manifest("train", python_command("print('trained')"), resources=gpu, pod_spec=GPU_SCHEDULING)
    batch.create_namespaced_job(namespace, manifest)

    def unschedulable_message() -> str | None:
        for pod in job_pods(core, namespace, "train"):
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    return str(condition.message)
        return None

    message = wait_for(unschedulable_message, timeout=30, what="the GPU pod to be reported unschedulable")
    assert "do not match nodeSelector" in message
    (pending,) = job_pods(core, namespace, "train")
    assert pending.spec.node_name is None
    assert pending.status.phase == "Pending"

    added_nodes.append(node_agent.add_node("gpu"))
    condition = wait_for(lambda: job_condition(batch, namespace, "train"), timeout=30, what="Job train to finish")

    assert condition == "Complete"
    (pod,) = job_pods(core, namespace, "train")
    assert pod.spec.node_name == added_nodes[0]
    assert node_agent.pod_log(namespace, pod.metadata.name, "main") == "trained\n"


def test_gpu_request_beyond_capacity_stays_pending(
    node_agent: NodeAgentClient, core: Any, namespace: str, added_nodes: list[str]
) -> None:
    added_nodes.append(node_agent.add_node("gpu"))
    pod = {
        "metadata": {"name": "two-gpus"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "unused",
                    "command": python_command("pass"),
                    "resources": {"limits": {"nvidia.com/gpu": "2"}},
                }
            ],
            **GPU_SCHEDULING,
        },
    }
    core.create_namespaced_pod(namespace, pod)

    message = wait_for(
        lambda: unschedulable_message(core, namespace, "two-gpus"),
        timeout=30,
        what="the two-GPU pod to be reported unschedulable",
    )
    assert "insufficient nvidia.com/gpu" in message
    assert core.read_namespaced_pod("two-gpus", namespace).spec.node_name is None


def test_gpu_taint_keeps_cpu_pod_off_gpu_node(
    node_agent: NodeAgentClient, core: Any, namespace: str, added_nodes: list[str]
) -> None:
    gpu_node = node_agent.add_node("gpu")
    added_nodes.append(gpu_node)
    pod = {
        "metadata": {"name": "cpu-only"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": gpu_node},
            "containers": [{"name": "main", "image": "unused", "command": python_command("pass")}],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    message = wait_for(
        lambda: unschedulable_message(core, namespace, "cpu-only"),
        timeout=30,
        what="the pod to be reported unschedulable",
    )
    assert "untolerated taint nvidia.com/gpu=present:NoSchedule" in message


def test_tpu_pod_lands_on_tpu_node(
    node_agent: NodeAgentClient,
    core: Any,
    batch: Any,
    namespace: str,
    added_nodes: list[str],
) -> None:
    added_nodes.append(node_agent.add_node("tpu"))
    tpu = {"requests": {"google.com/tpu": "4"}, "limits": {"google.com/tpu": "4"}}
    manifest = job_manifest("tpu", python_command("print('on tpu')"), resources=tpu, pod_spec=TPU_SCHEDULING)
    batch.create_namespaced_job(namespace, manifest)

    condition = wait_for(lambda: job_condition(batch, namespace, "tpu"), timeout=30, what="Job tpu to finish")

    assert condition == "Complete"
    (pod,) = job_pods(core, namespace, "tpu")
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5-lite-podslice"
    assert node.status.capacity["google.com/tpu"] == "4"


def test_memory_limit_kills_with_oomkilled(node_agent: NodeAgentClient, core: Any, batch: Any, namespace: str) -> None:
    # Writes 400 MiB in 10 MiB blocks (so the pages are resident), well past the 100 MiB limit, then
    # holds it, so only the kill can end the process before the test times out.
    source = "\n".join(
        [
            "import time",
            "blocks = []",
            "for _ in range(40):",
            "    blocks.append(b'x' * (10 << 20))",
            "    time.sleep(0.05)",
            "time.sleep(60)",
        ]
    )
    manifest = job_manifest("greedy", python_command(source), resources={"limits": {"memory": "100Mi"}})
    batch.create_namespaced_job(namespace, manifest)

    condition = wait_for(lambda: job_condition(batch, namespace, "greedy"), timeout=30, what="Job greedy to finish")

    assert condition == "Failed"
    (pod,) = job_pods(core, namespace, "greedy")
    terminated = terminated_state(pod)
    assert terminated.reason == "OOMKilled"
    assert terminated.exit_code == 137


def test_preemption_ignored_by_pod_failure_policy(
    node_agent: NodeAgentClient, core: Any, batch: Any, namespace: str, tmp_path: Path
) -> None:
    # The first pod leaves a marker and waits to be preempted; its replacement finds the marker and exits 0.
    marker = tmp_path / "first-pod-started"
    source = (
        "import pathlib, sys, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if marker.exists():\n"
        "    sys.exit(0)\n"
        "marker.touch()\n"
        "time.sleep(60)\n"
    )
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    manifest = job_manifest("preempted", python_command(source), job_spec={"podFailurePolicy": policy})
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
    batch.create_namespaced_job(namespace, manifest)
    wait_for(marker.exists, timeout=30, what="the first pod to start")
    (first,) = job_pods(core, namespace, "preempted")

    node_agent.evict(namespace, first.metadata.name)

    condition = wait_for(lambda: job_condition(batch, namespace, "preempted"), timeout=30, what="Job to finish")
    assert condition == "Complete"
    job = batch.read_namespaced_job("preempted", namespace)
    assert not job.status.failed, "a pod failure ignored by the policy must not count toward backoffLimit"
    assert job.status.succeeded == 1


def test_node_removal_fails_its_pods(
    node_agent: NodeAgentClient, core: Any, namespace: str, added_nodes: list[str]
) -> None:
    node = node_agent.add_node("cpu")
    added_nodes.append(node)
    pod = {
        "metadata": {"name": "stranded", "finalizers": ["popnas.test/keep-for-inspection"]},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [
                {"name": "main", "image": "unused", "command": python_command("import time; time.sleep(60)")}
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: core.read_namespaced_pod("stranded", namespace).status.phase == "Running",
        timeout=30,
        what="pod stranded to run",
    )

    node_agent.remove_node(node)

    stranded = core.read_namespaced_pod("stranded", namespace)
    assert stranded.status.phase == "Failed"
    conditions = {condition.type: condition for condition in stranded.status.conditions}
    assert conditions["DisruptionTarget"].status == "True"
    assert conditions["DisruptionTarget"].reason == "TerminationByKubelet"
    assert terminated_state(stranded).exit_code == 137
    assert node not in {item.metadata.name for item in core.list_node().items}
    core.patch_namespaced_pod(
        "stranded", namespace, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )


def test_deployment_pod_becomes_available(
    node_agent: NodeAgentClient, api_client: client.ApiClient, core: Any, namespace: str
) -> None:
    apps: Any = client.AppsV1Api(api_client)
    labels = {"app": "server"}
    deployment = {
        "metadata": {"name": "server"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {"name": "main", "image": "unused", "command": python_command("import time; time.sleep(600)")}
                    ],
                },
            },
        },
    }
    apps.create_namespaced_deployment(namespace, deployment)

    wait_for(
        lambda: apps.read_namespaced_deployment("server", namespace).status.available_replicas == 1,
        timeout=30,
        what="Deployment server to have one available replica",
    )
    (pod,) = core.list_namespaced_pod(namespace, label_selector="app=server").items
    assert pod.status.phase == "Running"
    conditions = {condition.type: condition.status for condition in pod.status.conditions}
    assert conditions["Ready"] == "True"
    assert pod.status.container_statuses[0].state.running is not None


def test_restart_policy_always_restarts_container(node_agent: NodeAgentClient, core: Any, namespace: str) -> None:
    pod = {
        "metadata": {"name": "flaky"},
        "spec": {
            "restartPolicy": "Always",
            "containers": [{"name": "main", "image": "unused", "command": python_command("print('run')")}],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def restart_count() -> int:
        statuses = core.read_namespaced_pod("flaky", namespace).status.container_statuses or []
        return int(statuses[0].restart_count) if statuses else 0

    wait_for(lambda: restart_count() >= 2, timeout=30, what="container of pod flaky to restart twice")
    flaky = core.read_namespaced_pod("flaky", namespace)
    assert flaky.status.phase == "Running"
    assert flaky.status.container_statuses[0].last_state.terminated.exit_code == 0
    assert node_agent.pod_log(namespace, "flaky", "main").startswith("run\nrun\n")
