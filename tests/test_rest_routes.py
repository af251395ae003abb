"""Which ML Commons endpoint a request names, and OpenSearch's answers when none does."""

from __future__ import annotations

import pytest

from pipelines.rest_api.api_errors import ApiError
from pipelines.rest_api.routes import route


@pytest.mark.parametrize(
    ("method", "path", "handler", "ids"),
    [
        ("POST", "/_plugins/_ml/_batch_ingestion", "batch_ingest", {}),
        ("GET", "/_plugins/_ml/tasks/_search", "search_tasks", {}),
        ("POST", "/_plugins/_ml/tasks/_search", "search_tasks", {}),
        ("GET", "/_plugins/_ml/tasks/abc", "get_task", {"task_id": "abc"}),
        ("HEAD", "/_plugins/_ml/tasks/abc", "get_task", {"task_id": "abc"}),
        ("GET", "/_plugins/_ml/tasks/a%2Fb", "get_task", {"task_id": "a/b"}),
        ("DELETE", "/_plugins/_ml/tasks/abc/", "delete_task", {"task_id": "abc"}),
        ("POST", "/_plugins/_ml/tasks/abc/_cancel", "cancel_task", {"task_id": "abc"}),
        ("POST", "/_plugins/_ml/connectors/_create", "create_connector", {}),
        ("GET", "/_plugins/_ml/connectors/c1", "get_connector", {"connector_id": "c1"}),
        ("DELETE", "/_plugins/_ml/connectors/c1", "delete_connector", {"connector_id": "c1"}),
        ("POST", "/_plugins/_ml/models/_register", "register_model", {}),
        ("POST", "/_plugins/_ml/models/m1/_deploy", "deploy_model", {"model_id": "m1"}),
        ("POST", "/_plugins/_ml/models/m1/_undeploy", "undeploy_model", {"model_id": "m1"}),
        ("GET", "/_plugins/_ml/models/m1", "get_model", {"model_id": "m1"}),
        ("DELETE", "/_plugins/_ml/models/m1", "delete_model", {"model_id": "m1"}),
        ("POST", "/_plugins/_ml/models/m1/_batch_predict", "batch_predict", {"model_id": "m1"}),
    ],
)
def test_each_endpoint_is_routed_with_its_ids(method, path, handler, ids):
    found = route(method, path)
    assert (found.handler, found.ids) == (handler, ids)


def test_a_known_path_with_another_method_is_405_naming_the_allowed_ones():
    with pytest.raises(ApiError) as refused:
        route("PUT", "/_plugins/_ml/tasks/abc")
    assert refused.value.status == 405
    assert refused.value.reason.endswith("allowed: [GET, DELETE]")


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/_plugins/_ml",
        "/_plugins/_ml/tasks",
        "/_plugins/_ml/tasks/a/b",
        "/_plugins/_ml/models/m/_predict",
        "x",
    ],
)
def test_unknown_paths_are_400_no_handler_found(path):
    with pytest.raises(ApiError) as refused:
        route("GET", path)
    assert refused.value.status == 400
    assert refused.value.reason == f"no handler found for uri [{path}] and method [GET]"
    assert refused.value.reply()[1]["error"]["type"] == "illegal_argument_exception"


def test_segments_are_decoded_before_they_are_matched():
    assert route("POST", "/_plugins/_ml/tasks/%5Fsearch").handler == "search_tasks"
    assert route("GET", "/_plugins/_ml/tasks/%5Fsearch").handler == "search_tasks"
    assert route("POST", "/_plugins/_ml/models/m%201/%5Fdeploy").ids == {"model_id": "m 1"}
    with pytest.raises(ApiError):
        route("POST", "/_plugins/_ml/tasks//_cancel")
