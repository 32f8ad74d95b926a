"""project.db.redis: the lean pool's commands and errors, and PerProcess, which gives a
forked child its own object (never the parent's sockets) and makes one anew after a reset."""

import os

import pytest
import redis

from project.db.redis import PerProcess, RedisConnections
from tests.support import closed_port


def test_commands_answer_as_redis_does_and_a_failed_connection_is_not_handed_out_again(settings):
    connections = RedisConnections(settings.CACHES["default"]["LOCATION"], size=1, timeout=1.0)
    key = f"stockroom-test-redis-connections-{os.getpid()}"
    try:
        assert connections.execute("SET", key, b"\x00value") == b"OK"
        assert connections.execute("MGET", key, key + "-missing") == [b"\x00value", None]
        with pytest.raises(redis.ResponseError):
            connections.execute("INCR", key)  # not an integer: Redis' error, raised
        with connections.connection() as connection:
            pass
        with pytest.raises(RuntimeError), connections.connection() as connection:
            raise RuntimeError("the caller failed mid-command")
        assert connection._sock is None  # disconnected before it went back
        assert connections.execute("DEL", key) == 1  # the slot connects again
    finally:
        connections.close()


def test_an_unreachable_redis_is_a_connection_error():
    connections = RedisConnections(f"redis://127.0.0.1:{closed_port()}/0", size=1, timeout=0.5)
    with pytest.raises(redis.ConnectionError):
        connections.execute("PING")


def test_a_forked_child_makes_its_own_and_a_reset_closes_the_old_one():
    made, closed = [], []
    per_process = PerProcess(lambda: made.append(object()) or made[-1], closed.append)
    parent = per_process.get()
    assert per_process.get() is parent

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new object, and the parent's is never closed here
        try:
            child = per_process.get()
            os.write(write, b"new" if child is not parent and closed == [] else b"same")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 10) == b"new"
    os.close(read)
    os.close(write)

    assert per_process.get() is parent  # the parent keeps its own
    per_process.reset()
    assert closed == [parent]
    assert per_process.get() is not parent
