"""Unrouted URLs: JSON under /api/ (DRF's error shape), Django's page elsewhere."""

import json

import pytest


@pytest.mark.parametrize(
    "path", ["/api/v1/assignments/abc/judgment/", "/api/v1/no-such-thing/"]
)
def test_an_unrouted_api_url_is_a_json_404(client, db, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert path in response.json()["detail"]


def test_an_unrouted_page_stays_html(client, db):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_api_server_error_is_json(rf):
    from config.errors import SERVER_ERROR, server_error

    response = server_error(rf.get("/api/v1/projects/"))
    assert response.status_code == 500
    assert json.loads(response.content) == {"detail": SERVER_ERROR}
