"""`uv run whatsapp-worker`: the inbox worker as its own process, to scale out.

Any number of these (and of API processes with WORKER_ENABLED=true) share the work through the
database. SIGTERM or SIGINT stops claiming and lets events in flight finish; a killed worker's
events return to the queue when their leases run out.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from app.container import build_container
from app.core.logging import configure_logging
from app.core.settings import Settings, get_settings

logger = logging.getLogger(__name__)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run one worker until `stop` is set."""
    async with build_container(settings) as container:
        worker = container.worker
        logger.info("Worker %s started", worker.owner)
        container.notifications.start()
        task = asyncio.create_task(worker.run(), name="inbox-worker")
        await stop.wait()
        await container.notifications.stop()
        await worker.stop()
        await task


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
