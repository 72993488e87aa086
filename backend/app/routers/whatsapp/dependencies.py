"""Dependencies that hand routes the services built once in the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.container import Container


def get_container(request: Request) -> Container:
    container = getattr(request.app.state, "container", None)
    if not isinstance(container, Container):
        raise RuntimeError("app.state.container is not set: the app's lifespan builds it")
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
