"""Output lines as Boolean variables of a remote OPC UA server (e.g. a PLC's OPC UA interface).

asyncua is asynchronous; the driver runs its client on a private event-loop
thread (:class:`asyncua.sync.ThreadLoop`) and ``set`` waits for one Write
service call, bounded by ``timeout_s``. Values are written without source
timestamps: several PLC servers refuse writes that carry them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from asyncua import Client, ua
from asyncua.sync import ThreadLoop

from ..alarms import ReportFn
from ..config import OpcUaOutputConfig
from ..plc.link import Backoff
from .base import OutputError, unmapped_line
from .reconnecting import ReconnectingOutput


class OpcUaOutput(ReconnectingOutput):
    """Drives named lines as Boolean nodes of one OPC UA server."""

    component = "output:opcua"

    def __init__(self, cfg: OpcUaOutputConfig, report: ReportFn | None = None):
        super().__init__(Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s), report)
        self.cfg = cfg
        self._tloop: ThreadLoop | None = None
        self._client: Client | None = None
        self._nodes: dict[str, Any] = {}

    @property
    def peer(self) -> str:
        """The endpoint URL."""
        return self.cfg.endpoint

    def open(self) -> None:
        """Start the client's event-loop thread, then connect (or keep trying)."""
        self._tloop = ThreadLoop(timeout=self.cfg.timeout_s + 1.0)
        self._tloop.start()
        super().open()

    def close(self) -> None:
        """Release the lines, disconnect, stop the event-loop thread."""
        super().close()
        if self._tloop is not None:
            self._tloop.stop()
            self._tloop = None

    def _post(self, coro: Any) -> Any:
        assert self._tloop is not None, "open() first"
        return self._tloop.post(coro)

    def _connect(self) -> None:
        client = Client(self.cfg.endpoint, timeout=self.cfg.timeout_s)
        self._client = client
        self._post(client.connect())
        nodes = {}
        for line, nodeid in self.cfg.nodes.items():
            try:
                nodes[line] = client.get_node(nodeid)
            except Exception as exc:  # noqa: BLE001 - a malformed NodeId string is a config error
                raise OutputError(
                    f"reject.output.nodes.{line}: {nodeid!r} is not a NodeId ({exc}); e.g. 'ns=2;s=Reject'"
                ) from None
        self._nodes = nodes

    def _write_line(self, line: str, value: bool) -> None:
        node = self._nodes.get(line)
        if node is None:
            raise unmapped_line(line, "nodes", self.cfg.nodes)
        dv = ua.DataValue(ua.Variant(bool(value), ua.VariantType.Boolean))
        try:
            self._post(node.write_attribute(ua.AttributeIds.Value, dv))
        except ua.UaStatusCodeError as exc:
            if _is_connection_status(exc):
                raise
            # The server answered: the node is wrong (unknown, not writable, not Boolean), the link is fine.
            raise OutputError(f"{self.peer} refused {line}={value} on {self.cfg.nodes[line]}: {exc}") from None

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._nodes = {}
        if client is None or self._tloop is None:
            return
        with contextlib.suppress(Exception):  # the connection is already gone; nothing to release
            self._post(client.disconnect())


def _is_connection_status(exc: ua.UaStatusCodeError) -> bool:
    code = getattr(exc, "code", None)
    return code in {
        ua.StatusCodes.BadConnectionClosed,
        ua.StatusCodes.BadSessionIdInvalid,
        ua.StatusCodes.BadSessionClosed,
        ua.StatusCodes.BadSecureChannelClosed,
        ua.StatusCodes.BadTimeout,
        ua.StatusCodes.BadCommunicationError,
    }
