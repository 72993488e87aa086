"""Dependencies that hand routes the services built once in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.container import Container


async def get_container(request: Request) -> Container:
    # async on purpose: FastAPI runs a plain `def` dependency in a thread pool, a thread hop
    # on every request for what is an attribute lookup.
    container = getattr(request.app.state, "container", None)
    if not isinstance(container, Container):
        raise RuntimeError("app.state.container is not set: the app's lifespan builds it")
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
