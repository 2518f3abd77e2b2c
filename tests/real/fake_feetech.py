"""Feetech STS servos on a fake serial line: the lowest level under LeRobot's motor bus.

``FakeSerial`` replaces ``serial.Serial`` inside the Feetech SDK (``scservo_sdk``): every byte
LeRobot's ``FeetechMotorsBus`` writes is parsed as a protocol-0 instruction packet
(``FF FF id len instr params... checksum``) and answered with status packets from
``FakeServos``, whose control tables are byte arrays at the real STS3215 addresses. So the
test runs LeRobot's robot class, motor bus, SDK packet handler and port handler unchanged.
"""

from __future__ import annotations

import types

PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
BROADCAST = 0xFE
GOAL_POSITION, PRESENT_POSITION, TORQUE_ENABLE = 42, 56, 40
MIN_LIMIT, MAX_LIMIT, HOMING_OFFSET = 9, 11, 31


def _checksum(body: list[int]) -> int:
    return ~sum(body) & 0xFF


class FakeServos:
    """STS3215 servos with ids ``ids``: a 256-byte table each; goals are reached at once."""

    def __init__(self, ids=(1, 2, 3, 4, 5, 6), model=777, firmware=(3, 10)):
        self.tables = {i: bytearray(256) for i in ids}
        for table in self.tables.values():
            table[0], table[1] = firmware
            table[3:5] = model.to_bytes(2, "little")
            table[MIN_LIMIT : MIN_LIMIT + 2] = (0).to_bytes(2, "little")
            table[MAX_LIMIT : MAX_LIMIT + 2] = (4095).to_bytes(2, "little")
            table[PRESENT_POSITION : PRESENT_POSITION + 2] = (2048).to_bytes(2, "little")
        self.unplugged = False
        self.goal_writes: list[dict[int, int]] = []

    def word(self, servo: int, addr: int) -> int:
        return int.from_bytes(self.tables[servo][addr : addr + 2], "little")

    def handle(self, packet: bytes) -> bytes:
        """One instruction packet in, the status packet(s) out."""
        if self.unplugged:
            return b""
        servo, instr, params = packet[2], packet[4], list(packet[5:-1])
        if instr == SYNC_WRITE:
            addr, length, rest = params[0], params[1], params[2:]
            goals = {}
            for k in range(0, len(rest), length + 1):
                sid, data = rest[k], rest[k + 1 : k + 1 + length]
                self._write(sid, addr, data)
                if addr == GOAL_POSITION:
                    goals[sid] = int.from_bytes(bytes(data), "little")
            if goals:
                self.goal_writes.append(goals)
            return b""
        if instr == SYNC_READ:
            addr, length, ids = params[0], params[1], params[2:]
            return b"".join(self._status(i, self.tables[i][addr : addr + length]) for i in ids)
        if servo not in self.tables:
            return b""
        if instr == PING:
            return self._status(servo, b"")
        if instr == READ:
            addr, length = params
            return self._status(servo, self.tables[servo][addr : addr + length])
        if instr == WRITE:
            self._write(servo, params[0], params[1:])
            return b"" if servo == BROADCAST else self._status(servo, b"")
        return b""

    def _write(self, servo: int, addr: int, data: list[int]) -> None:
        if servo not in self.tables:
            return
        self.tables[servo][addr : addr + len(data)] = bytes(data)
        if addr == GOAL_POSITION and self.tables[servo][TORQUE_ENABLE]:
            self.tables[servo][PRESENT_POSITION : PRESENT_POSITION + 2] = bytes(data[:2])

    @staticmethod
    def _status(servo: int, data: bytes) -> bytes:
        body = [servo, len(data) + 2, 0, *data]
        return bytes([0xFF, 0xFF, *body, _checksum(body)])


class FakeSerial:
    """The subset of ``serial.Serial`` the Feetech SDK uses."""

    def __init__(self, servos: FakeServos, port=None, **_):
        self.servos, self.port = servos, port
        self.is_open = True
        self._rx = bytearray()
        self._tx = bytearray()

    @property
    def in_waiting(self) -> int:
        return len(self._rx)

    def write(self, data) -> int:
        self._tx.extend(bytes(data))
        while len(self._tx) >= 4 and self._tx[:2] == b"\xff\xff":
            end = 4 + self._tx[3]
            if len(self._tx) < end:
                break
            packet, self._tx = bytes(self._tx[:end]), self._tx[end:]
            self._rx.extend(self.servos.handle(packet))
        return len(data)

    def read(self, n: int = 1) -> bytes:
        out, self._rx = bytes(self._rx[:n]), self._rx[n:]
        return out

    def reset_input_buffer(self) -> None:
        self._rx.clear()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.is_open = False


def serial_module(servos: FakeServos) -> types.SimpleNamespace:
    """A stand-in for the ``serial`` module as ``scservo_sdk.port_handler`` uses it."""
    return types.SimpleNamespace(Serial=lambda **kwargs: FakeSerial(servos, **kwargs), EIGHTBITS=8)
