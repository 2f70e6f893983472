"""Run a single-node Apache Kafka broker (KRaft) on 127.0.0.1 from Maven Central jars.

Machines here have Java and Maven but no Docker, so Maven (``pom.xml`` beside this module)
fetches the broker's jars once into a cache folder and the broker runs as a plain ``java``
process, broker and controller in one JVM. Design notes:

- Replication settings: on one node the defaults (replication factor 3, min ISR 2) keep
  ``__consumer_offsets`` and ``__transaction_state`` from being created, and consumer groups
  and transactions then retry forever instead of failing; they are set to 1.
- Static quorum (``controller.quorum.voters``) rather than ``format --standalone``, which
  records the controller's endpoint in the metadata log: a data folder formatted once can be
  restarted on other ports (``port=0`` picks free ports at every start).
- Readiness from the log line ``Kafka Server started`` (``kafka.server.KafkaRaftServer``, INFO):
  the client port opens before the broker can serve requests; Kafka's tooling and
  testcontainers wait for the same line, so ``log4j2.properties`` keeps that logger at INFO.
- Own session and process group (``start_new_session``): the broker outlives the command that
  started it, does not get the terminal's Ctrl-C, and is signalled as a group. SIGTERM is
  Kafka's clean shutdown; SIGKILL only after a bound.
- ``broker.pid`` and ``broker.json`` in the data folder let another process find the broker;
  a pid that is gone or whose command line is not a broker's is stale.

POSIX only (signals, process groups, ``fcntl`` locking).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack import process
from devstack.properties import (
    HOST,
    SCRAM_MECHANISM,
    BrokerKeystore,
    new_cluster_id,
    server_properties,
)

KAFKA_VERSION = "4.3.1"
READY_LINE = "Kafka Server started"
BROKER_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
DEFAULT_HEAP = "512M"
DEFAULT_CACHE_DIR = "~/.cache/kafka-completions"
CACHE_DIR_ENV = "KC_CACHE_DIR"

_HERE = Path(__file__).resolve().parent
POM_FILE = _HERE / "pom.xml"
LOG4J_FILE = _HERE / "log4j2.properties"

_MAVEN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
# What kafka-server-start.sh passes besides the heap.
_BROKER_JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
_KILL_WAIT_S = 10.0
_POLL_S = 0.2
_TAIL_LINES = 40


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    """A running local broker."""

    pid: int
    bootstrap: str
    data_dir: Path


def ensure_jars(cache_dir: Path) -> Path:
    """Fetch the broker's runtime jars into ``cache_dir`` once and return their folder."""
    home = cache_dir.expanduser().resolve() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    # The marker is written last, so a download cut short is redone; it holds the pom's
    # digest so that editing the pom (a new Kafka version) refreshes the jars too.
    marker = home / ".complete"
    digest = hashlib.sha256(POM_FILE.read_bytes()).hexdigest()
    if _read_text(marker) == digest:
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _file_lock(home / ".lock"):
        if _read_text(marker) == digest:  # another process finished while we waited
            return libs
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        _run_maven(libs, cwd=home)
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"Maven finished but {libs} holds no kafka_2.13 jar")
        marker.write_text(digest)
    return libs


def _run_maven(libs: Path, cwd: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven ('mvn') is not on PATH; install Maven 3.8+ to fetch Kafka's jars")
    goal = "dependency:copy-dependencies -DincludeScope=runtime"
    cmd = [mvn, "-B", "-q", "-f", str(POM_FILE), *goal.split(), f"-DoutputDirectory={libs}"]
    _run_checked(cmd, "jar download", cwd=cwd, timeout_s=_MAVEN_TIMEOUT_S)


def _run_checked(cmd: list[str], what: str, cwd: Path, timeout_s: float) -> None:
    try:
        done = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"{what} timed out after {timeout_s:.0f} s: {shlex.join(cmd)}") from exc
    if done.returncode != 0:
        tail = _tail(done.stdout + done.stderr)
        raise BrokerError(f"{what} failed (exit {done.returncode}): {shlex.join(cmd)}\n{tail}")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Two test runs sharing one cache must not download into the same folder at once.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LocalBroker:
    """A single-node KRaft broker on 127.0.0.1 whose files live in ``data_dir``.

    With ``scram=(user, password)`` it also listens for SASL_PLAINTEXT (SCRAM-SHA-512) clients
    on ``sasl_port`` (``sasl_bootstrap``); the credential is created when the data is formatted.
    With ``tls`` (a keystore from ``devstack.certs``) it listens for SSL clients on
    ``ssl_port``, and with both for SASL_SSL (SCRAM over TLS) on ``sasl_ssl_port``;
    ``listener(protocol)`` gives each address.
    """

    def __init__(
        self,
        data_dir: Path,
        cache_dir: Path,
        *,
        port: int = 9092,
        controller_port: int = 9093,
        heap: str = DEFAULT_HEAP,
        scram: tuple[str, str] | None = None,
        sasl_port: int = 0,
        tls: BrokerKeystore | None = None,
        ssl_port: int = 0,
        sasl_ssl_port: int = 0,
    ) -> None:
        self._data_dir = data_dir.expanduser().resolve()
        self._cache_dir = cache_dir.expanduser()
        self._port = port
        self._controller_port = controller_port
        self._heap = heap
        self._scram = scram
        self._tls = tls
        wanted = {"SASL_PLAINTEXT": sasl_port, "SSL": ssl_port, "SASL_SSL": sasl_ssl_port}
        secured = {"SASL_PLAINTEXT": scram, "SSL": tls, "SASL_SSL": scram and tls}
        self._secured = {p: port for p, port in wanted.items() if secured[p]}
        self._log_dirs = self._data_dir / "kafka-logs"
        self._pid_file = self._data_dir / "broker.pid"
        self._state_file = self._data_dir / "broker.json"
        self._proc: process.Child | None = None
        self._started_here = False

    @property
    def data_dir(self) -> Path:
        """Absolute folder holding the config, the log, the pid/state files and the data."""
        return self._data_dir

    @property
    def log_dir(self) -> Path:
        """The broker's ``log.dirs``: one folder per topic partition, holding its segments."""
        return self._log_dirs

    @property
    def log_file(self) -> Path:
        """The broker's console output."""
        return self._data_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        """Bootstrap address of the running broker; BrokerError when it is not running."""
        running = self.status()
        if running is None:
            raise BrokerError(f"no broker is running from {self._data_dir}")
        return running.bootstrap

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT (SCRAM-SHA-512) listener's address; BrokerError without one."""
        return self.listener("SASL_PLAINTEXT")

    def listener(self, protocol: str) -> str:
        """The address of the running broker's ``protocol`` listener; BrokerError without one."""
        self.bootstrap  # noqa: B018 -- raises when not running
        state = json.loads(self._state_file.read_text())
        port = state.get("listeners", {}).get(protocol)
        if port is None:
            raise BrokerError(f"the broker from {self._data_dir} has no {protocol} listener")
        return f"{HOST}:{port}"

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A broker that was already running belongs to someone else: leave it up.
        if self._started_here:
            self.stop()

    def start(self, timeout_s: float = 90) -> str:
        """Start the broker (or find it running) and return its bootstrap address."""
        running = self.status()
        if running is not None:
            return running.bootstrap
        libs = ensure_jars(self._cache_dir)
        java = _find_java()
        wanted = (self._port, self._controller_port, *self._secured.values())
        port, controller_port, *extra = _choose_ports(*wanted)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        config = self._data_dir / "server.properties"
        secured = dict(zip(self._secured, extra, strict=True))
        config.write_text(
            server_properties(self._log_dirs, port, controller_port, secured, self._tls)
        )
        if not (self._log_dirs / "meta.properties").exists():
            self._format(java, libs, config)
        bootstrap = f"{HOST}:{port}"
        proc = self._launch(java, libs, config)
        self._proc = proc
        self._write_state(proc.pid, bootstrap, port, controller_port, secured)
        self._await_ready(proc, timeout_s)
        self._started_here = True
        return bootstrap

    def stop(self, timeout_s: float = 30) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout_s``; no-op if not running."""
        running = self.status()
        if running is not None:
            _signal_group(running.pid, signal.SIGTERM)
            if not self._wait_exit(running.pid, timeout_s):
                _signal_group(running.pid, signal.SIGKILL)
                self._wait_exit(running.pid, _KILL_WAIT_S)
        self._clear_state()
        self._proc = None
        self._started_here = False

    def status(self) -> BrokerStatus | None:
        """Return the running broker, or None (no state file, or a stale pid)."""
        try:
            state = json.loads(self._state_file.read_text())
            pid, bootstrap = int(state["pid"]), str(state["bootstrap"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not self._is_alive(pid) or not _runs_broker(pid):
            return None
        return BrokerStatus(pid=pid, bootstrap=bootstrap, data_dir=self._data_dir)

    def _format(self, java: str, libs: Path, config: Path) -> None:
        args = ["format", "--ignore-formatted", "-t", new_cluster_id(), "-c", str(config)]
        if self._scram:
            user, password = self._scram
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        cmd = [java, "-Xmx256M", *_java_args(libs, STORAGE_TOOL_CLASS), *args]
        _run_checked(cmd, f"formatting {self._log_dirs}", self._data_dir, _FORMAT_TIMEOUT_S)

    def _launch(self, java: str, libs: Path, config: Path) -> process.Child:
        heap = [f"-Xms{self._heap}", f"-Xmx{self._heap}", *_BROKER_JVM_FLAGS]
        logs_dir = f"-Dkafka.logs.dir={self._data_dir}"
        cmd = [java, *heap, logs_dir, *_java_args(libs, BROKER_MAIN_CLASS), str(config)]
        # A fresh log each start: readiness is read from it, so an old run's line must go.
        with self.log_file.open("wb") as log:
            return process.launch(
                cmd, cwd=self._data_dir, stdout=log, stderr=subprocess.STDOUT, new_session=True
            )

    def _await_ready(self, proc: process.Child, timeout_s: float) -> None:
        def ready() -> bool:
            return READY_LINE in self.log_file.read_text(errors="replace")

        try:
            process.wait_ready(ready, [proc], "the broker", timeout_s)
        except process.ChildExited:
            self._clear_state()
            self._proc = None
            raise BrokerError(
                f"broker exited with code {proc.returncode} before it was ready; "
                f"last lines of {self.log_file}:\n{self._log_tail()}"
            ) from None
        except TimeoutError:
            self.stop()
            raise BrokerError(
                f"broker not ready after {timeout_s:g} s (no '{READY_LINE}' in {self.log_file}); "
                f"last lines:\n{self._log_tail()}"
            ) from None

    def _log_tail(self) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace")) or "(the log is empty)"
        except OSError as exc:
            return f"(log unreadable: {exc})"

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._is_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def _is_alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            # Our own child: poll() reaps it, where kill(pid, 0) would see a zombie as alive.
            return self._proc.poll() is None
        return _pid_alive(pid)

    def _write_state(
        self, pid: int, bootstrap: str, port: int, controller_port: int, secured: dict[str, int]
    ) -> None:
        ports = {"port": port, "controller_port": controller_port, "listeners": secured}
        state = {"pid": pid, "bootstrap": bootstrap, **ports, "data_dir": str(self._data_dir)}
        self._pid_file.write_text(f"{pid}\n")
        self._state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _clear_state(self) -> None:
        self._pid_file.unlink(missing_ok=True)
        self._state_file.unlink(missing_ok=True)


def _find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("'java' is not on PATH; install a Java 17+ runtime to run Kafka")
    return java


def _java_args(libs: Path, main_class: str) -> list[str]:
    return [f"-Dlog4j2.configurationFile={LOG4J_FILE}", "-cp", str(libs / "*"), main_class]


def _choose_ports(*ports: int) -> list[int]:
    # Every socket stays open until all are chosen, so two zeros never give the same port.
    with contextlib.ExitStack() as stack:
        chosen = []
        for wanted in ports:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            # Kafka binds with SO_REUSEADDR too; without it a port in TIME_WAIT looks taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, wanted))
            except OSError as exc:
                raise BrokerError(
                    f"port {wanted} on {HOST} is in use ({exc.strerror}); stop what holds it "
                    "or choose another port (0 picks a free one)"
                ) from exc
            chosen.append(int(sock.getsockname()[1]))
    return chosen


def _pid_alive(pid: int) -> bool:
    # A broker started by this process (e.g. by an earlier LocalBroker object) is our child:
    # reap it if it has exited, since kill(pid, 0) would still see the zombie as alive.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _runs_broker(pid: int) -> bool:
    # A pid file outlives reboots and pids are reused: check the command line where /proc
    # exists (Linux); elsewhere trust the pid.
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self").exists():
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return BROKER_MAIN_CLASS.encode() in args


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The broker leads its own process group (start_new_session), so pid is the group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-_TAIL_LINES:])
