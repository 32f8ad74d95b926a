"""Content-Security-Policy: 'self' only for our pages; Swagger UI alone may run its inline script."""

import re


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


def test_pages_allow_only_their_own_origin(client, db):
    response = client.get("/admin/login/")

    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert "script-src" not in policy  # falls back to default-src 'self'


def test_swagger_ui_gets_inline_script_and_style_and_loads_only_local_assets(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assets = re.findall(rb'(?:src|href)="([^"]+)"', response.content)
    assert assets
    assert all(asset.startswith(b"/") and not asset.startswith(b"//") for asset in assets), assets


def test_the_relaxed_policy_stops_at_the_docs_page(client):
    response = client.get("/api/schema/")

    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
