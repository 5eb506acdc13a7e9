"""The one module that talks to pymodbus on the gateway side: a synchronous RTU master for one serial port.

pymodbus's client API moves between minor releases (`slave=` became `device_id=` in 3.10, the per-request
timeout lives in the internal `comm_params`), so everything the gateway needs from it is here, behind three
outcomes: registers, an exception code, or one of two exceptions (`NoAnswerError`: this attempt got no valid reply;
`PortError`: the port itself failed). The next breaking pymodbus release touches this file only.
"""

from __future__ import annotations

import logging

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

__all__ = ["NoAnswerError", "PortError", "RtuMaster", "quiet_library_logging"]


class NoAnswerError(Exception):
    """One request got no valid answer (timeout, garbled or short reply); the message says which."""


class PortError(Exception):
    """The port itself failed (closed, unplugged, I/O error)."""


def quiet_library_logging() -> None:
    """Silence pymodbus's own per-timeout ERROR lines with frame dumps (the bus reports the same events once)."""
    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


class RtuMaster:
    """A Modbus RTU master on one serial port (device path, pty or pyserial URL), no retries of its own."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int,
        parity: str,
        stopbits: int,
        bytesize: int,
        timeout: float,
        name: str,
    ) -> None:
        # retries=0: the bus retries itself, keeping the inter-request silence and not retrying probes.
        self._client = ModbusSerialClient(
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            timeout=timeout,
            retries=0,
            name=name,
        )

    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return bool(self._client.connected)

    def connect(self) -> bool:
        """Open the port; False (or pyserial's exception) when it cannot be opened."""
        return bool(self._client.connect())

    def close(self) -> None:
        """Close the port (idempotent)."""
        self._client.close()

    def read_registers(self, function: int, address: int, count: int, unit: int, timeout: float) -> list[int] | int:
        """`count` registers read with function 3 or 4 from slave `unit`, or the code of its exception reply."""
        # pymodbus reads its timeout from comm_params on each receive: this gives per-device timeouts.
        self._client.comm_params.timeout_connect = timeout
        call = self._client.read_input_registers if function == 4 else self._client.read_holding_registers
        try:
            pdu = call(address, count=count, device_id=unit)
        except ConnectionException as exc:
            raise PortError(str(exc) or "connection lost") from None
        except ModbusIOException:
            raise NoAnswerError(f"no answer within {timeout:g} s") from None
        except ModbusException as exc:
            raise NoAnswerError(str(exc)) from None
        except OSError as exc:
            raise PortError(str(exc)) from None
        if not self._client.connected:
            raise PortError("port closed after an I/O error")
        if pdu.isError():
            code = getattr(pdu, "exception_code", None)
            if isinstance(code, int):
                return code
            raise NoAnswerError("unrecognised error reply")
        registers = list(getattr(pdu, "registers", []) or [])
        if len(registers) != count:
            raise NoAnswerError(f"reply carried {len(registers)} registers, {count} were asked for")
        return registers
