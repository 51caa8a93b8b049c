"""GraphQL over HTTP with an API key, as a script calls the API."""

from __future__ import annotations

from typing import Any

import httpx


async def post_graphql(
    base_url: str, token: str, query: str, variables: dict[str, Any] | None = None
) -> httpx.Response:
    """The HTTP answer itself, for tests that look at its raw text; its status is 200."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    return response


async def graphql(
    base_url: str, token: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The whole answer, ``data`` and ``errors``."""
    response = await post_graphql(base_url, token, query, variables)
    body: dict[str, Any] = response.json()
    return body


async def graphql_data(
    base_url: str, token: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The answer's ``data``, once it is sure there are no ``errors``."""
    body = await graphql(base_url, token, query, variables)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data
