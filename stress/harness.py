"""Run one attack on a real server process and measure the server from outside.

:class:`ServerProcess` starts ``stress/server.py`` and reads its memory from
``/proc/PID/status``; :class:`HonestClient` makes sequential ``add(1, 2)``
calls the whole time and keeps each latency; :func:`run_attack` puts them
together around one ``stress/attacker.py`` process and returns a
:class:`Measurement`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_pb

HERE = Path(__file__).resolve().parent
MB = 1_000_000
#: One summary line per attack run in this session, for the end of the pytest report.
REPORTS: list[str] = []


def memory(pid: int) -> tuple[int, int]:
    """The (VmRSS, VmHWM) of process *pid*, in bytes: its memory now, and its peak."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


class ServerProcess:
    """``stress/server.py`` running in a process of its own, its stderr in a file."""

    def __init__(
        self,
        log_path: Path,
        *,
        no_gc: bool = False,
        raw: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        command = [sys.executable, str(HERE / "server.py")]
        if no_gc:
            command.append("--no-gc")
        if raw:
            command.append("--raw")
        for name, value in (options or {}).items():
            command += ["--broker-option", f"{name}={value}"]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the server did not start: {log_path.read_text()[-2000:]}")
        ports = json.loads(line)
        self.port: int = ports["port"]
        self.login_port: int = ports["login_port"]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def memory(self) -> tuple[int, int]:
        return memory(self.pid)

    def reset_peak(self) -> None:
        """Make VmHWM start again from the present VmRSS (Linux: ``clear_refs`` 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def log_lines(self) -> list[str]:
        self._log.flush()
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@attrs.define
class HonestClient:
    """A well-behaved client: sequential ``add(1, 2)`` calls, *interval* apart, each one timed."""

    port: int
    interval: float = 0.01
    latencies: list[float] = attrs.Factory(list)
    error: BaseException | None = None
    _stop: bool = False
    _done: trio.Event = attrs.Factory(trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            async with trio_pb.open_tcp_broker("127.0.0.1", self.port) as broker:
                root = await broker.root_object()
                for _ in range(100):
                    await root.call_remote("add", 1, 2)
                task_status.started()
                started = True
                while not self._stop:
                    start = trio.current_time()
                    try:
                        result = await root.call_remote("add", 1, 2)
                    finally:
                        # Cancelled in the middle (the server is stuck): that counts too.
                        self.latencies.append(trio.current_time() - start)
                    if result != 3:
                        raise AssertionError(f"add(1, 2) answered {result!r}")
                    await trio.sleep(self.interval)
        except Exception as exc:
            self.error = exc
            if not started:
                task_status.started()
        finally:
            self._done.set()

    async def stop(self, grace: float) -> None:
        """Let the call in progress finish (for at most *grace* seconds), then stop."""
        self._stop = True
        with trio.move_on_after(grace):
            await self._done.wait()

    @property
    def worst(self) -> float:
        return max(self.latencies, default=math.inf)

    @property
    def p99(self) -> float:
        if not self.latencies:
            return math.inf
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@attrs.define
class Measurement:
    """What one attack did to the server, and what the attacker saw."""

    attacker: dict[str, Any]
    rss_before: int
    rss_peak: int
    rss_after: int
    honest: HonestClient
    log: list[str]
    server_alive: bool

    @property
    def growth(self) -> int:
        """How far the server's memory rose above where it was before the attack."""
        return self.rss_peak - self.rss_before

    def summary(self) -> str:
        honest = self.honest
        return (
            f"server RSS {self.rss_before / MB:.1f} MB, peak {self.growth / MB:+.1f} MB, "
            f"after {(self.rss_after - self.rss_before) / MB:+.1f} MB; "
            f"honest calls {len(honest.latencies)}, worst {honest.worst * 1000:.0f} ms, "
            f"p99 {honest.p99 * 1000:.0f} ms{', error ' + repr(honest.error) if honest.error else ''}; "
            f"log lines {len(self.log)}; server alive {self.server_alive}; attacker {self.attacker}"
        )


async def run_attack(
    server: ServerProcess, mode: str, *arguments: str, timeout: float, port: int | None = None
) -> Measurement:
    """Run ``attacker.py MODE`` against *server* while an honest client calls it; measure.

    The server's memory is read from outside before the attack and at its
    peak; the attacker gets *timeout* seconds, after which it is killed and
    the measurement taken anyway.  The attacker's JSON report is in the
    result (``{"timed_out": true}`` if it had to be killed).
    """
    honest = HonestClient(server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(honest.run)
        before, _ = server.memory()
        server.reset_peak()
        log_start = len(server.log_lines())
        command = [
            sys.executable,
            str(HERE / "attacker.py"),
            mode,
            "--port",
            str(port or server.port),
            *arguments,
        ]
        report: dict[str, Any] = {"timed_out": True}
        with trio.move_on_after(timeout):
            done = await trio.run_process(command, capture_stdout=True, stderr=None, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"the attacker failed with exit status {done.returncode}")
            report = json.loads(done.stdout)
        _, peak = server.memory()
        await honest.stop(grace=5)
        nursery.cancel_scope.cancel()
    # Let the server settle (closing the attacker's connection, freeing what it held).
    await trio.sleep(0.5)
    after, peak_after = server.memory() if server.alive else (0, 0)
    measurement = Measurement(
        attacker=report,
        rss_before=before,
        rss_peak=max(peak, peak_after),
        rss_after=after,
        honest=honest,
        log=server.log_lines()[log_start:],
        server_alive=server.alive,
    )
    test = os.environ.get("PYTEST_CURRENT_TEST", mode).split(" ")[0]
    REPORTS.append(f"{test}: {measurement.summary()}")
    return measurement
