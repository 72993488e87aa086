"""The application factory: it starts, builds its clients once, and answers /health."""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from app.container import Container
from app.core.settings import Settings
from app.integrations.kapso import KapsoClient
from app.main import create_app


async def test_health_answers_and_lifespan_builds_the_kapso_client(database_url: str) -> None:
    app = create_app(Settings(_env_file=None, database_url=SecretStr(database_url)))
    async with LifespanManager(app) as manager:
        assert isinstance(app.state.kapso, KapsoClient)
        container = app.state.container
        assert isinstance(container, Container)
        assert container.kapso is app.state.kapso
        # The lifespan opened the configured database (not the embedded one).
        assert container.stores.database.dsn == database_url
        await container.stores.database.ping()
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "environment": "development"}
