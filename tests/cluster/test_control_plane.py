"""The control plane itself: CRD validation, RBAC, garbage collection and namespace deletion."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.fixtures import Kubectl, wait_for

pytestmark = pytest.mark.cluster

GROUP = "test.popnas.io"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "!has(self.color) || self.color != 'red' || self.size <= 5",
                                        "message": "red widgets have a size of at most 5",
                                    }
                                ],
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})


@pytest.fixture(scope="module")
def widget_crd(kubectl: Kubectl) -> str:
    """The Widget CRD, applied with kubectl and Established."""
    kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/widgets.{GROUP}")
    return f"widgets.{GROUP}"


def test_crd_and_valid_object_apply(widget_crd: str, kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=widget("small", {"size": 3, "color": "red"}))

    stored = json.loads(kubectl("get", "-n", namespace, "widget", "small", "-o", "json").stdout)
    assert stored["spec"] == {"size": 3, "color": "red"}
    assert stored["metadata"]["uid"]
    listed = kubectl("get", "-n", namespace, "wdg", "-o", "name").stdout.split()
    assert listed == [f"widget.{GROUP}/small"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": 11}, "should be less than or equal to 10"),
        ({"size": "three"}, 'Invalid value: "string"'),
        ({"color": "red"}, "Required value"),
        ({"size": 2, "color": "green"}, "Unsupported value"),
        ({"size": 8, "color": "red"}, "red widgets have a size of at most 5"),
    ],
)
def test_object_breaking_schema_rejected(
    widget_crd: str, kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    completed = kubectl("apply", "-n", namespace, "-f", "-", input=widget("broken", spec), check=False)

    assert completed.returncode != 0
    assert "is invalid" in completed.stderr
    assert message in completed.stderr
    missing = kubectl("get", "-n", namespace, "widget", "broken", check=False)
    assert "NotFound" in missing.stderr


def test_unknown_field_rejected_or_pruned(widget_crd: str, kubectl: Kubectl, namespace: str) -> None:
    manifest = widget("extra", {"size": 1, "shape": "round"})

    # kubectl requests strict field validation by default, so the server rejects the unknown field.
    strict = kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert strict.returncode != 0
    assert 'strict decoding error: unknown field "spec.shape"' in strict.stderr

    # Without validation the server prunes the field, as the CRD does not preserve unknown fields.
    kubectl("apply", "--validate=false", "-n", namespace, "-f", "-", input=manifest)
    stored = json.loads(kubectl("get", "-n", namespace, "widget", "extra", "-o", "json").stdout)
    assert stored["spec"] == {"size": 1}


def test_rbac_forbids_unbound_service_account(api_client: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token("reader", namespace, {"spec": {}}).status.token

    settings = client.Configuration()
    settings.host = api_client.configuration.host
    settings.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    settings.api_key = {"BearerToken": token}
    settings.api_key_prefix = {"BearerToken": "Bearer"}
    with client.ApiClient(settings) as account_client, pytest.raises(ApiException) as denied:
        client.CoreV1Api(account_client).list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)


def _job(name: str, owner: dict[str, Any] | None) -> dict[str, Any]:
    # Suspended, so that no pod is created: these tests are about the Job object only.
    return {
        "metadata": {"name": name, "ownerReferences": [owner] if owner else []},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "unused", "command": ["true"]}],
                }
            },
        },
    }


def test_owner_deletion_collects_jobs(api_client: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(api_client)
    batch: Any = client.BatchV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    for name in ("owned-a", "owned-b"):
        batch.create_namespaced_job(namespace, _job(name, reference))
    batch.create_namespaced_job(namespace, _job("unowned", None))

    core.delete_namespaced_config_map("owner", namespace)

    wait_for(
        lambda: {job.metadata.name for job in batch.list_namespaced_job(namespace).items} == {"unowned"},
        timeout=30,
        what="the garbage collector to delete the Jobs owned by the deleted ConfigMap",
    )


@pytest.mark.slow
def test_custom_owner_deletion_collects_jobs(
    widget_crd: str, api_client: client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    batch: Any = client.BatchV1Api(api_client)
    kubectl("apply", "-n", namespace, "-f", "-", input=widget("owner", {"size": 1}))
    uid = kubectl("get", "-n", namespace, "widget", "owner", "-o", "jsonpath={.metadata.uid}").stdout
    reference = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "name": "owner", "uid": uid}
    batch.create_namespaced_job(namespace, _job("owned", reference))

    kubectl("delete", "-n", namespace, "widget", "owner", "--wait=false")

    # NOTE: the garbage collector learns about new resource kinds by rereading discovery every
    # 30 s (kube-controller-manager v1.36), so a CRD created moments ago can take that long.
    wait_for(
        lambda: not batch.list_namespaced_job(namespace).items,
        timeout=90,
        what="the garbage collector to delete the Job owned by the deleted Widget",
        interval=0.5,
    )


def test_namespace_deletion_finishes(api_client: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(api_client)
    name = f"test-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}})

    core.delete_namespace(name)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_for(namespace_gone, timeout=60, what=f"the namespace controller to finish deleting namespace {name}")
