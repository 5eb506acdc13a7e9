"""The one module that talks to pymodbus on the simulators' side: an RTU slave server for several addresses.

pymodbus's server API moves between minor releases (`pymodbus.simulator`'s `SimDevice`/`SimData` arrived in
3.12, `trace_pdu` and the action signature changed before), so `simulators.modbus` sees only this: register
blocks per slave address, one async callback per request that may fill the registers or name an exception
code, and a predicate saying which addresses answer at all. The next breaking pymodbus release touches this
file only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

__all__ = ["ILLEGAL_FUNCTION", "RegisterAction", "RtuSlaveServer"]

ILLEGAL_FUNCTION = 0x01

# (slave address, first register of the block, the block's registers to fill, whether the request writes)
# -> None to answer normally, or the exception code to answer with.
RegisterAction = Callable[[int, int, list[int], bool], Awaitable[int | None]]


class RtuSlaveServer:
    """Modbus RTU slaves at several addresses, on a serial port or RTU-over-TCP on loopback."""

    def __init__(
        self,
        blocks: Mapping[int, Sequence[tuple[int, int]]],
        action: RegisterAction,
        answers: Callable[[int], bool],
    ) -> None:
        """`blocks`: per slave address, its (first register, count) blocks; others get exception 02."""
        self._blocks = blocks
        self._action = action
        self._answers = answers
        self._server: ModbusSerialServer | ModbusTcpServer | None = None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        # An incoming request for an address that does not answer gets no reply at all: returning None makes
        # the pymodbus request handler skip the request (RS-485 silence).
        if sending or self._answers(pdu.dev_id):
            return pdu
        return None  # type: ignore[return-value]

    def _devices(self) -> list[SimDevice]:
        devices = []
        for address, blocks in self._blocks.items():

            async def action(
                fc: int,
                start: int,
                addr: int,
                count: int,
                regs: list[int],
                values: list[int] | list[bool] | None,
                _address: int = address,
            ) -> ExcCodes | None:
                code = await self._action(_address, start, regs, values is not None)
                return None if code is None else ExcCodes(code)

            simdata = [
                SimData(first, count=count, values=0, datatype=DataType.REGISTERS) for first, count in blocks
            ]
            devices.append(SimDevice(id=address, simdata=simdata, action=action))
        return devices

    async def serve_serial(self, port: str, baudrate: int) -> None:
        """Start serving on a serial port (a pty's slave side) in the running loop."""
        self._server = ModbusSerialServer(
            self._devices(),
            port=port,
            baudrate=baudrate,
            ignore_missing_devices=True,
            reconnect_delay=0,
            trace_pdu=self._trace_pdu,
        )
        await self._server.serve_forever(background=True)

    async def serve_tcp(self) -> int:
        """Start serving RTU frames over TCP on a free loopback port; return the port."""
        server = self._server = ModbusTcpServer(
            self._devices(),
            framer=FramerType.RTU,
            address=("127.0.0.1", 0),
            ignore_missing_devices=True,
            trace_pdu=self._trace_pdu,
        )
        await server.serve_forever(background=True)
        sockets = getattr(server.transport, "sockets", None)
        if not sockets:
            await server.shutdown()
            raise RuntimeError("pymodbus TCP server has no listening socket")
        return int(sockets[0].getsockname()[1])

    async def shutdown(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
