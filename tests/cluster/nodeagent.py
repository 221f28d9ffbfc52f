"""Test-only node agent: fake Nodes for the test control plane, with pods run as local processes.

It does the part of the scheduler, the kubelet and the cluster autoscaler that the tests need:

- registers Nodes in pools (CPU, GPU with `nvidia.com/gpu`, TPU with `google.com/tpu`), each pool
  with the labels, taints and capacity of a GKE node pool of that kind;
- binds each pending pod to the first node it fits: resource requests against what the node has
  left, nodeSelector, required node affinity, taints against tolerations;
- runs each container's command and args as a local process with the pod's environment, and
  ignores the image. Output goes to a log file per container. A process whose resident memory
  exceeds the container's memory limit is killed and reported as OOMKilled with exit code 137.
  The pod's restartPolicy applies, and its phase, conditions and container states go to pods/status;
- on request, evicts a pod with a DisruptionTarget condition (preemption), removes a node with its
  pods, or adds a node to a pool (scale-up).

Requests come over HTTP on 127.0.0.1 (see `ControlHandler`) and run in the agent's loop, one at a
time between two passes over the pods. Run it as a script: `python nodeagent.py --help`.
Not supported: init containers (such pods fail), probes, ports, pod networking and volumes. So no
service-account token is mounted, and a pod process cannot use the in-cluster configuration.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

logger = logging.getLogger("nodeagent")

# A model object of the kubernetes client (V1Pod, V1Node, ...). The models declare every field
# Optional, and the agent reads fields that the API server always sets, so it does not narrow them.
ApiObject = Any

POOL_LABEL = "popnas.test/pool"
LOOP_INTERVAL_SECONDS = 0.2
# The client sends a patch body as a JSON patch unless the call sets another content type.
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
# Delay before the first restart of an exited container, doubled per restart up to the maximum. The
# kubelet uses 10 s and 300 s; shorter delays keep the tests fast.
RESTART_BACKOFF_SECONDS = 1.0
MAX_RESTART_BACKOFF_SECONDS = 30.0


# --- pools and nodes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """A node pool: every node in it has these labels, taints and capacity."""

    name: str
    capacity: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()


# Labels and taints as GKE sets them on accelerator node pools; the values are examples of one
# machine type each.
POOLS = {
    "cpu": Pool(
        name="cpu",
        capacity={"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        labels={"node.kubernetes.io/instance-type": "e2-standard-4"},
    ),
    "gpu": Pool(
        name="gpu",
        capacity={"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi", "nvidia.com/gpu": "1"},
        labels={
            "node.kubernetes.io/instance-type": "n1-standard-8",
            "cloud.google.com/gke-accelerator": "nvidia-tesla-t4",
            "cloud.google.com/gke-gpu": "true",
        },
        taints=({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},),
    ),
    "tpu": Pool(
        name="tpu",
        capacity={"cpu": "24", "memory": "48Gi", "pods": "110", "ephemeral-storage": "100Gi", "google.com/tpu": "4"},
        labels={
            "node.kubernetes.io/instance-type": "ct5lp-hightpu-4t",
            "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
            "cloud.google.com/gke-tpu-topology": "2x2",
        },
        taints=({"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"},),
    ),
}


def node_manifest(name: str, pool: Pool) -> dict[str, Any]:
    """Return a Node with its status: a create may set status, later updates go through nodes/status."""
    now = _now()
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        POOL_LABEL: pool.name,
        **pool.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [dict(taint) for taint in pool.taints]},
        "status": {
            "capacity": dict(pool.capacity),
            "allocatable": dict(pool.capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "test node agent is running",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "popnas test node agent",
                "kernelVersion": os.uname().release,
                "containerRuntimeVersion": "local-process://0",
                "kubeletVersion": "v0.0.0-popnas-node-agent",
                "kubeProxyVersion": "",
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
            },
        },
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- scheduling ---------------------------------------------------------------------------------------


def container_requests(pod: ApiObject) -> dict[str, Decimal]:
    """Return the pod's summed container requests; a limit without a request counts as the request."""
    total: dict[str, Decimal] = {}
    for container in pod.spec.containers:
        resources = container.resources
        requested = dict((resources.limits or {}) if resources else {})
        requested.update((resources.requests or {}) if resources else {})
        for name, quantity in requested.items():
            total[name] = total.get(name, Decimal(0)) + parse_quantity(quantity)
    return total


def tolerates(pod: ApiObject, taint: ApiObject) -> bool:
    """Return whether one of the pod's tolerations matches the taint (key, operator, value, effect)."""
    for toleration in pod.spec.tolerations or []:
        if toleration.effect and toleration.effect != taint.effect:
            continue
        operator = toleration.operator or "Equal"
        if not toleration.key:
            if operator == "Exists":
                return True
            continue
        if toleration.key != taint.key:
            continue
        if operator == "Exists" or (toleration.value or "") == (taint.value or ""):
            return True
    return False


def _expression_matches(labels: dict[str, str], expression: ApiObject) -> bool:
    value = labels.get(expression.key)
    values = expression.values or []
    if expression.operator == "In":
        return value in values
    if expression.operator == "NotIn":
        return value not in values
    if expression.operator == "Exists":
        return expression.key in labels
    if expression.operator == "DoesNotExist":
        return expression.key not in labels
    # Gt and Lt compare integers.
    if value is None:
        return False
    try:
        number, bound = int(value), int(values[0])
    except (ValueError, IndexError):
        return False
    return number > bound if expression.operator == "Gt" else number < bound


def node_selection_matches(pod: ApiObject, node: ApiObject) -> bool:
    """Return whether the node's labels satisfy the pod's nodeSelector and required node affinity."""
    labels = node.metadata.labels or {}
    for key, value in (pod.spec.node_selector or {}).items():
        if labels.get(key) != value:
            return False
    affinity = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    required = affinity.required_during_scheduling_ignored_during_execution if affinity else None
    if required is None:
        return True
    # The terms are ORed; the expressions inside one term are ANDed.
    return any(
        all(_expression_matches(labels, expression) for expression in term.match_expressions or [])
        for term in required.node_selector_terms
    )


def unfit_reason(pod: ApiObject, node: ApiObject, used: dict[str, Decimal]) -> str | None:
    """Return why the pod cannot run on the node, or None when it fits."""
    if node.spec.unschedulable:
        return "node is cordoned"
    if not node_selection_matches(pod, node):
        return "node labels do not match nodeSelector or node affinity"
    for taint in node.spec.taints or []:
        if taint.effect in ("NoSchedule", "NoExecute") and not tolerates(pod, taint):
            return f"untolerated taint {taint.key}={taint.value or ''}:{taint.effect}"
    allocatable = node.status.allocatable or {}
    for name, amount in container_requests(pod).items():
        free = parse_quantity(allocatable.get(name, "0")) - used.get(name, Decimal(0))
        if amount > free:
            return f"insufficient {name}: requested {amount}, free {free}"
    pod_slots = parse_quantity(allocatable.get("pods", "0")) - used.get("pods", Decimal(0))
    if pod_slots < 1:
        return "too many pods"
    return None


def is_terminal(pod: ApiObject) -> bool:
    """Return whether the pod has reached Succeeded or Failed."""
    return bool(pod.status and pod.status.phase in ("Succeeded", "Failed"))


# --- running containers -----------------------------------------------------------------------------


@dataclass
class RunningContainer:
    """The local process of one container, with what its status report needs."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    memory_limit_bytes: int | None
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    exit_code: int | None = None
    finished_at: str = ""
    reason: str = ""
    oom_killed: bool = False
    # Monotonic time of the pending restart, while the container waits in CrashLoopBackOff.
    restart_at: float | None = None
    last_terminated: dict[str, Any] | None = None

    def start(self) -> None:
        """Start the process in a session of its own, so a stop reaches the processes it started too."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if self.exit_code is not None:
            self.last_terminated = self._terminated_state()
        self.started_at = _now()
        self.restart_at = None
        self.exit_code = None
        self.finished_at = ""
        self.reason = ""
        self.oom_killed = False

    def poll(self) -> bool:
        """Update the exit fields when the process has exited; return whether it has."""
        if self.process is None:
            return self.exit_code is not None
        if self.exit_code is not None:
            return True
        code = self.process.poll()
        if code is None:
            return False
        # A process killed by a signal has a negative returncode; report it as 128 + signal, as the kubelet does.
        self.exit_code = 128 - code if code < 0 else code
        self.finished_at = _now()
        if self.oom_killed:
            self.reason = "OOMKilled"
        else:
            self.reason = "Completed" if self.exit_code == 0 else "Error"
        return True

    def resident_bytes(self) -> int:
        """Return the resident memory of the process and its direct children, from /proc, in bytes."""
        if self.process is None or self.process.poll() is not None:
            return 0
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in children.read_text().split()]
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except (OSError, ValueError, IndexError):
                continue
        return total

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the process group that this container's process leads (its id is the pid)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def enforce_memory_limit(self) -> bool:
        """Kill the process group with SIGKILL when its resident memory exceeds the container's limit.

        Returns whether it killed the process group now.
        """
        if self.memory_limit_bytes is None or self.oom_killed:
            return False
        if self.resident_bytes() <= self.memory_limit_bytes:
            return False
        self.oom_killed = True
        self.signal_group(signal.SIGKILL)
        return True

    def status(self, image: str, *, running_pod: bool) -> dict[str, Any]:
        """Return this container's entry for status.containerStatuses."""
        last_terminated = self.last_terminated
        if self.process is not None and self.exit_code is None:
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.exit_code is not None and self.restart_at is not None:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"exited with code {self.exit_code}"}}
            last_terminated = self._terminated_state()
        elif self.exit_code is not None:
            state = {"terminated": self._terminated_state()}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        running = "running" in state
        status = {
            "name": self.name,
            "image": image,
            "imageID": "",
            "containerID": f"local-process://{self.process.pid}" if self.process else None,
            "ready": running and running_pod,
            "started": running,
            "restartCount": self.restart_count,
            "state": state,
        }
        if last_terminated is not None:
            status["lastState"] = {"terminated": last_terminated}
        return status

    def _terminated_state(self) -> dict[str, Any]:
        return {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }


@dataclass
class PodRun:
    """The containers that the agent runs for one pod, bound to one of its nodes."""

    namespace: str
    name: str
    uid: str
    node: str
    restart_policy: str
    containers: list[RunningContainer]
    images: dict[str, str]
    start_time: str = field(default_factory=_now)
    deletion_started: float | None = None
    grace_seconds: float = 30.0
    disruption: dict[str, str] | None = None
    # Why the agent could not start the pod; such a pod is Failed at once.
    failure_message: str | None = None
    reported: str = ""

    def running(self) -> bool:
        return any(container.exit_code is None and container.process is not None for container in self.containers)

    def phase(self) -> str:
        """Return the pod phase: Running while a container runs or will restart, else Succeeded or Failed."""
        if self.failure_message is not None:
            return "Failed"
        if self.running():
            return "Running"
        codes = [container.exit_code for container in self.containers]
        # A container that the restartPolicy restarts keeps the pod Running, unless the pod is going away.
        restartable = self.deletion_started is None and self.disruption is None
        if restartable and self.restart_policy == "Always":
            return "Running"
        if restartable and self.restart_policy == "OnFailure" and any(code not in (0, None) for code in codes):
            return "Running"
        if all(code == 0 for code in codes) and self.disruption is None:
            return "Succeeded"
        return "Failed"

    def stop(self, signum: int) -> None:
        for container in self.containers:
            container.signal_group(signum)


# --- the agent --------------------------------------------------------------------------------------


class NodeAgent:
    """Registers nodes and runs the pods bound to them; see the module docstring."""

    def __init__(self, api: client.CoreV1Api, work_dir: Path, base_env: dict[str, str]) -> None:
        # Any: the agent passes plain dict bodies, which the client validates into its models.
        self.api: Any = api
        self.work_dir = work_dir
        self.base_env = base_env
        self.nodes: dict[str, str] = {}  # node name -> pool name
        self.runs: dict[str, PodRun] = {}  # pod uid -> run
        self.requests: queue.Queue[tuple[dict[str, Any], Future[dict[str, Any]]]] = queue.Queue()
        self.stopping = threading.Event()
        self._node_numbers: dict[str, int] = {}

    # Requests from the control endpoint. Each returns a JSON-ready dict or raises ValueError.

    def add_node(self, pool_name: str) -> dict[str, Any]:
        """Register one more node in the pool and return its name."""
        pool = POOLS.get(pool_name)
        if pool is None:
            raise ValueError(f"unknown pool {pool_name!r}; expected one of {sorted(POOLS)}")
        number = self._node_numbers.get(pool_name, 0)
        self._node_numbers[pool_name] = number + 1
        name = f"{pool_name}-node-{number}"
        self.api.create_node(node_manifest(name, pool))
        # The TaintNodesByCondition admission plugin adds node.kubernetes.io/not-ready to every new Node.
        # The node lifecycle controller, which would remove it, does not run here, so the agent does.
        self.api.patch_node(
            name, {"spec": {"taints": [dict(taint) for taint in pool.taints]}}, _content_type=MERGE_PATCH
        )
        self.nodes[name] = pool_name
        logger.info("registered node %s in pool %s", name, pool_name)
        return {"node": name}

    def remove_node(self, name: str) -> dict[str, Any]:
        """Fail the node's pods with a DisruptionTarget condition, as a node shutdown does, then delete the Node."""
        if name not in self.nodes:
            raise ValueError(f"node {name!r} not found; this agent manages {sorted(self.nodes)}")
        for run in list(self.runs.values()):
            if run.node == name:
                run.disruption = {
                    "reason": "TerminationByKubelet",
                    "message": f"node {name} was removed by the test node agent",
                }
                run.stop(signal.SIGKILL)
                self._wait_for_exit(run)
                self._report(run, force=True)
                self._delete_pod(run)
        try:
            self.api.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise
        del self.nodes[name]
        logger.info("removed node %s", name)
        return {"node": name}

    def evict(self, namespace: str, name: str) -> dict[str, Any]:
        """Preempt a running pod: add DisruptionTarget as the scheduler does, then delete the pod gracefully.

        The pod keeps the condition when it turns Failed, so a Job's podFailurePolicy can match it.
        """
        run = next((r for r in self.runs.values() if r.namespace == namespace and r.name == name), None)
        if run is None:
            raise ValueError(f"pod {namespace}/{name} is not running on this agent's nodes")
        run.disruption = {"reason": "PreemptionByScheduler", "message": "preempted by the test node agent"}
        self._report(run, force=True)
        self.api.delete_namespaced_pod(name, namespace)
        logger.info("evicted pod %s/%s", namespace, name)
        return {"pod": f"{namespace}/{name}"}

    def list_nodes(self) -> dict[str, Any]:
        return {"nodes": dict(self.nodes)}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        action = request.get("action")
        if action == "add-node":
            return self.add_node(str(request.get("pool")))
        if action == "remove-node":
            return self.remove_node(str(request.get("node")))
        if action == "evict":
            return self.evict(str(request.get("namespace")), str(request.get("name")))
        if action == "list-nodes":
            return self.list_nodes()
        raise ValueError(f"unknown action {action!r}; expected add-node, remove-node, evict or list-nodes")

    # The loop.

    def run_forever(self) -> None:
        """Serve queued requests and pass over the pods every LOOP_INTERVAL_SECONDS until stopped."""
        while not self.stopping.is_set():
            self._serve_requests()
            try:
                self.reconcile()
            except ApiException as error:
                logger.warning("API request failed: %s %s; retrying on the next pass", error.status, error.reason)
            except Exception:
                # Keep the agent alive for the other tests; the log has the traceback.
                logger.exception("pass over the pods failed; retrying on the next pass")
            self.stopping.wait(LOOP_INTERVAL_SECONDS)
        for run in self.runs.values():
            run.stop(signal.SIGKILL)
        self._serve_requests()

    def _serve_requests(self) -> None:
        while True:
            try:
                request, future = self.requests.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(self.handle(request))
            except Exception as error:  # ControlHandler turns it into an HTTP error reply
                future.set_exception(error)

    def reconcile(self) -> None:
        """Bind pending pods, start bound ones, and report and clean up the ones this agent runs."""
        pods = self.api.list_pod_for_all_namespaces().items
        nodes = {node.metadata.name: node for node in self.api.list_node().items if node.metadata.name in self.nodes}
        seen: set[str] = set()

        used: dict[str, dict[str, Decimal]] = {name: {} for name in nodes}
        for pod in pods:
            if pod.spec.node_name in used and not is_terminal(pod):
                usage = used[pod.spec.node_name]
                for resource, amount in container_requests(pod).items():
                    usage[resource] = usage.get(resource, Decimal(0)) + amount
                usage["pods"] = usage.get("pods", Decimal(0)) + 1

        for pod in pods:
            uid = pod.metadata.uid
            seen.add(uid)
            if not pod.spec.node_name:
                if pod.metadata.deletion_timestamp is None and (pod.spec.scheduler_name or "") == "default-scheduler":
                    self._try_bind(pod, nodes, used)
                continue
            if pod.spec.node_name not in self.nodes:
                continue
            run = self.runs.get(uid)
            if run is None:
                if is_terminal(pod):
                    if pod.metadata.deletion_timestamp is not None:
                        self._delete_pod_object(pod.metadata.namespace, pod.metadata.name, uid)
                    continue
                run = self._start(pod)
                if run is None:
                    continue
            self._advance(run, pod)

        for uid in [uid for uid in self.runs if uid not in seen]:
            run = self.runs.pop(uid)
            run.stop(signal.SIGKILL)
            logger.info("pod %s/%s is gone; stopped its processes", run.namespace, run.name)

    def _try_bind(self, pod: ApiObject, nodes: dict[str, ApiObject], used: dict[str, dict[str, Decimal]]) -> None:
        reasons = []
        for name in sorted(nodes):
            reason = unfit_reason(pod, nodes[name], used[name])
            if reason is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": pod.metadata.name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": name},
                }
                # The server returns a Status, which the client (37.0.1) fails to decode as a Binding,
                # so the raw response is read and dropped instead.
                response = self.api.create_namespaced_pod_binding(
                    pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
                )
                response.read()
                for resource, amount in container_requests(pod).items():
                    used[name][resource] = used[name].get(resource, Decimal(0)) + amount
                used[name]["pods"] = used[name].get("pods", Decimal(0)) + 1
                logger.info("bound pod %s/%s to node %s", pod.metadata.namespace, pod.metadata.name, name)
                return
            reasons.append(f"{name}: {reason}")
        message = "; ".join(reasons) if reasons else "no nodes"
        self._set_unschedulable(pod, message)

    def _set_unschedulable(self, pod: ApiObject, reasons: str) -> None:
        message = f"0/{len(self.nodes)} nodes are available: {reasons}"
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.message == message:
                return
        logger.info("pod %s/%s is unschedulable: %s", pod.metadata.namespace, pod.metadata.name, message)
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": _now(),
                    }
                ]
            }
        }
        self.api.patch_namespaced_pod_status(
            pod.metadata.name, pod.metadata.namespace, patch, _content_type=STRATEGIC_MERGE_PATCH
        )

    def _start(self, pod: ApiObject) -> PodRun | None:
        namespace, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        pod_dir = self.work_dir / "pods" / f"{namespace}_{name}_{uid}"
        images = {container.name: container.image for container in pod.spec.containers}
        run = PodRun(
            namespace=namespace,
            name=name,
            uid=uid,
            node=pod.spec.node_name,
            restart_policy=pod.spec.restart_policy or "Always",
            containers=[],
            images=images,
        )
        self.runs[uid] = run

        failure = None
        if pod.spec.init_containers:
            failure = "init containers are not supported by the test node agent"
        for container in pod.spec.containers:
            argv = list(container.command or []) + list(container.args or [])
            if not argv and failure is None:
                failure = f"container {container.name} has no command; the test node agent ignores images"
            limits = container.resources.limits if container.resources else None
            memory = limits.get("memory") if limits else None
            try:
                env = self._container_env(pod, container)
            except (ApiException, ValueError) as error:
                failure = failure or f"container {container.name}: environment failed: {error}"
                env = {}
            run.containers.append(
                RunningContainer(
                    name=container.name,
                    argv=argv,
                    env=env,
                    cwd=Path(container.working_dir) if container.working_dir else pod_dir,
                    log_path=pod_dir / f"{container.name}.log",
                    memory_limit_bytes=int(parse_quantity(memory)) if memory else None,
                )
            )
        pod_dir.mkdir(parents=True, exist_ok=True)

        if failure is not None:
            logger.warning("pod %s/%s cannot run: %s", namespace, name, failure)
            for running in run.containers:
                running.exit_code, running.reason, running.finished_at = 1, "CreateContainerError", _now()
            run.failure_message = failure
            self._report(run, force=True)
            return run

        for running in run.containers:
            try:
                running.start()
            except OSError as error:
                logger.warning("pod %s/%s container %s failed to start: %s", namespace, name, running.name, error)
                running.exit_code, running.reason, running.finished_at = 128, "StartError", _now()
        logger.info("started pod %s/%s on node %s", namespace, name, run.node)
        return run

    def _container_env(self, pod: ApiObject, container: ApiObject) -> dict[str, str]:
        """Return the process environment: the agent's base variables, then the container's env entries."""
        env = dict(self.base_env)
        env["HOSTNAME"] = pod.metadata.name
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.config_map_ref is not None:
                data = self.api.read_namespaced_config_map(source.config_map_ref.name, pod.metadata.namespace).data
                env.update({prefix + key: value for key, value in (data or {}).items()})
            if source.secret_ref is not None:
                data = self.api.read_namespaced_secret(source.secret_ref.name, pod.metadata.namespace).data
                env.update({prefix + key: _decode(value) for key, value in (data or {}).items()})
        for variable in container.env or []:
            if variable.value_from is None:
                env[variable.name] = _expand(variable.value or "", env)
                continue
            env[variable.name] = self._env_value_from(pod, variable.value_from)
        return env

    def _env_value_from(self, pod: ApiObject, source: ApiObject) -> str:
        namespace = pod.metadata.namespace
        if source.field_ref is not None:
            fields = {
                "metadata.name": pod.metadata.name,
                "metadata.namespace": namespace,
                "metadata.uid": pod.metadata.uid,
                "spec.nodeName": pod.spec.node_name,
                "spec.serviceAccountName": pod.spec.service_account_name or "default",
                "status.hostIP": "127.0.0.1",
                "status.podIP": "127.0.0.1",
            }
            path = source.field_ref.field_path
            if path in fields:
                return str(fields[path])
            for kind, values in (("labels", pod.metadata.labels), ("annotations", pod.metadata.annotations)):
                prefix = f"metadata.{kind}['"
                if path.startswith(prefix) and path.endswith("']"):
                    return str((values or {}).get(path[len(prefix) : -2], ""))
            raise ValueError(f"fieldRef {path!r} is not supported")
        if source.config_map_key_ref is not None:
            reference = source.config_map_key_ref
            data = self.api.read_namespaced_config_map(reference.name, namespace).data or {}
            return str(data.get(reference.key, ""))
        if source.secret_key_ref is not None:
            reference = source.secret_key_ref
            data = self.api.read_namespaced_secret(reference.name, namespace).data or {}
            return _decode(data.get(reference.key, ""))
        raise ValueError("valueFrom supports fieldRef, configMapKeyRef and secretKeyRef only")

    def _advance(self, run: PodRun, pod: ApiObject) -> None:
        for container in run.containers:
            if container.exit_code is None and container.enforce_memory_limit():
                logger.info(
                    "killed container %s of pod %s/%s: resident memory above its limit of %d bytes",
                    container.name,
                    run.namespace,
                    run.name,
                    container.memory_limit_bytes,
                )
            container.poll()

        deleting = pod.metadata.deletion_timestamp is not None
        if deleting and run.deletion_started is None:
            run.deletion_started = time.monotonic()
            run.grace_seconds = float(pod.metadata.deletion_grace_period_seconds or 0)
            run.stop(signal.SIGTERM)
        if run.deletion_started is not None:
            if time.monotonic() - run.deletion_started >= run.grace_seconds:
                run.stop(signal.SIGKILL)
            if not run.running():
                self._report(run, force=False)
                self._delete_pod(run)
            return

        if run.disruption is None:
            self._restart_exited(run)
        self._report(run, force=False)

    def _restart_exited(self, run: PodRun) -> None:
        for container in run.containers:
            if container.exit_code is None or container.process is None:
                continue
            restart = run.restart_policy == "Always" or (run.restart_policy == "OnFailure" and container.exit_code != 0)
            if not restart:
                continue
            if container.restart_at is None:
                delay = min(RESTART_BACKOFF_SECONDS * 2**container.restart_count, MAX_RESTART_BACKOFF_SECONDS)
                container.restart_at = time.monotonic() + delay
                continue
            if time.monotonic() < container.restart_at:
                continue
            container.restart_count += 1
            logger.info(
                "restarting container %s of pod %s/%s (exit code %d, restart %d)",
                container.name,
                run.namespace,
                run.name,
                container.exit_code,
                container.restart_count,
            )
            container.start()

    def _report(self, run: PodRun, *, force: bool) -> None:
        """Write the pod's status when it changed since the last write (or always when `force`)."""
        phase = run.phase()
        now = _now()
        running = phase == "Running"
        statuses = [
            container.status(run.images.get(container.name, ""), running_pod=running) for container in run.containers
        ]
        ready = "True" if running and all(status["ready"] for status in statuses) else "False"
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": run.start_time},
            {"type": "Initialized", "status": "True", "lastTransitionTime": run.start_time},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
            {"type": "Ready", "status": ready, "lastTransitionTime": now},
        ]
        if run.disruption is not None:
            conditions.append(
                {"type": "DisruptionTarget", "status": "True", "lastTransitionTime": now, **run.disruption}
            )

        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": run.start_time,
            "conditions": conditions,
            "containerStatuses": statuses,
        }
        if run.failure_message is not None:
            status["message"] = run.failure_message
            status["reason"] = "UnsupportedPod"

        # Compare without timestamps, so an unchanged pod is not rewritten on every pass.
        fingerprint = json.dumps(
            [phase, ready, run.disruption, [(s["state"].keys(), s["restartCount"]) for s in statuses]],
            default=list,
        )
        if not force and fingerprint == run.reported:
            return
        try:
            self.api.patch_namespaced_pod_status(
                run.name, run.namespace, {"status": status}, _content_type=STRATEGIC_MERGE_PATCH
            )
        except ApiException as error:
            if error.status != 404:
                raise
        run.reported = fingerprint

    def _wait_for_exit(self, run: PodRun, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for container in run.containers:
            while not container.poll() and time.monotonic() < deadline:
                time.sleep(0.02)

    def _delete_pod(self, run: PodRun) -> None:
        self._delete_pod_object(run.namespace, run.name, run.uid)
        self.runs.pop(run.uid, None)

    def _delete_pod_object(self, namespace: str, name: str, uid: str) -> None:
        """Delete the pod with grace period 0, as the kubelet does once its containers are gone."""
        options = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
        try:
            self.api.delete_namespaced_pod(name, namespace, body=options)
        except ApiException as error:
            if error.status not in (404, 409):
                raise


def _decode(value: str) -> str:
    return base64.b64decode(value).decode()


def _expand(value: str, env: dict[str, str]) -> str:
    """Expand $(NAME) references to variables already in `env`, as the kubelet does for earlier entries.

    `env` also contains the agent's own environment, which a kubelet would not offer. $$ escapes a
    dollar, and a reference to an unknown name stays as written.
    """
    result = []
    index = 0
    while index < len(value):
        if value.startswith("$$", index):
            result.append("$")
            index += 2
        elif value.startswith("$(", index) and ")" in value[index:]:
            end = value.index(")", index)
            key = value[index + 2 : end]
            result.append(env.get(key, value[index : end + 1]))
            index = end + 1
        else:
            result.append(value[index])
            index += 1
    return "".join(result)


# --- control endpoint ---------------------------------------------------------------------------------


class ControlHandler(BaseHTTPRequestHandler):
    """POST / with a JSON request such as {"action": "add-node", "pool": "gpu"}; returns JSON.

    Actions: add-node (pool), remove-node (node), evict (namespace, name), list-nodes.
    Status 200 with the result, 400 with {"error": ...} for an invalid request, 500 when the API failed.
    """

    agent: NodeAgent

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as error:
            self._reply(400, {"error": f"invalid JSON: {error}"})
            return
        future: Future[dict[str, Any]] = Future()
        self.agent.requests.put((request, future))
        try:
            self._reply(200, future.result(timeout=60))
        except ValueError as error:
            self._reply(400, {"error": str(error)})
        except ApiException as error:
            logger.warning("control request %s failed: API error %s %s", request, error.status, error.reason)
            self._reply(500, {"error": f"API request failed: {error.status} {error.reason}: {error.body}"})
        except Exception as error:  # a bug in the agent, or the loop did not take the request within 60 s
            logger.exception("control request %s failed", request)
            self._reply(500, {"error": f"{type(error).__name__}: {error}"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("control request: " + format, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description="Test-only node agent for the popnas cluster tests.")
    parser.add_argument("--kubeconfig", required=True, type=Path, help="kubeconfig of the test API server")
    parser.add_argument("--work-dir", required=True, type=Path, help="folder for pod working folders and logs")
    parser.add_argument(
        "--nodes",
        default="cpu=1",
        help=f"initial nodes per pool, for example cpu=2,gpu=0,tpu=1 (pools: {', '.join(POOLS)})",
    )
    parser.add_argument(
        "--port-file", required=True, type=Path, help="file to write the control port (on 127.0.0.1) into once ready"
    )
    arguments = parser.parse_args()
    initial_pools: list[str] = []
    for entry in filter(None, arguments.nodes.split(",")):
        pool_name, _, count = entry.partition("=")
        if pool_name not in POOLS or not (count or "1").isdigit():
            parser.error(f"invalid --nodes entry {entry!r}; expected POOL=COUNT with POOL one of {', '.join(POOLS)}")
        initial_pools += [pool_name] * int(count or "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    api = client.CoreV1Api(config.new_client_from_config(str(arguments.kubeconfig)))
    # Containers see the agent's own environment (PATH, HOME, the Python in use) under the pod's variables.
    agent = NodeAgent(api, arguments.work_dir, base_env=dict(os.environ))
    for pool_name in initial_pools:
        agent.add_node(pool_name)

    ControlHandler.agent = agent
    server = ThreadingHTTPServer(("127.0.0.1", 0), ControlHandler)
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: agent.stopping.set())
    # Written last and renamed into place, so a reader never sees a port before the agent is ready.
    temporary = arguments.port_file.with_suffix(".tmp")
    temporary.write_text(str(server.server_address[1]))
    temporary.rename(arguments.port_file)
    logger.info("node agent ready; control port %d", server.server_address[1])

    agent.run_forever()
    server.shutdown()
    logger.info("node agent stopped")


if __name__ == "__main__":
    main()
