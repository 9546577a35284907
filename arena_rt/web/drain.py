"""SIGTERM drains: the node hands its battles over before uvicorn closes its sockets.

uvicorn's own shutdown closes every WebSocket with 1012 and no reason, with battles still
running here. This server first stops listening (the load balancer sends new sockets to the
peers), then lets the app drain (:meth:`Services.drain`: battles handed to peers, commits in
flight finished, sockets closed 1001 with a reason saying to reconnect), then shuts down as
uvicorn does.
"""

from __future__ import annotations

import logging
import socket

import uvicorn

from arena_rt.web.services import Services

log = logging.getLogger("arena_rt")


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting: new connections go to the other nodes
        services = self.lifespan.state.get("services") if hasattr(self, "lifespan") else None
        if isinstance(services, Services) and not self.force_exit:
            log.info("draining: handing battles over, then closing sockets with 1001")
            try:
                await services.drain()
            except Exception:
                log.exception("drain failed; shutting down anyway")
        await super().shutdown(sockets)
