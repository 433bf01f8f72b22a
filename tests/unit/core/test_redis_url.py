"""core/redis.py's URL parser: every form it takes, and nginx-worded refusals."""

import socket

import pytest

from ngxws.core.redis import RedisURLError, parse_redis_url


def fake_resolve(host, port, family, type_):
    if host == "nowhere.invalid":
        raise socket.gaierror(-2, "Name or service not known")
    if family == socket.AF_INET6 or ":" in host:
        return [(socket.AF_INET6, type_, 6, "", (host, port, 0, 0))]
    return [(socket.AF_INET, type_, 6, "", ("127.0.0.1" if host == "localhost" else host, port))]


@pytest.mark.parametrize("url,addr,user,password,db,name", [
    ("redis://127.0.0.1:6380", ("127.0.0.1", 6380), None, None, 0, "redis://127.0.0.1:6380"),
    ("redis://localhost", ("127.0.0.1", 6379), None, None, 0, "redis://localhost:6379"),
    ("redis://:pw@10.0.0.1:7000/2", ("10.0.0.1", 7000), None, "pw", 2, "redis://10.0.0.1:7000/2"),
    ("redis://app:p%40ss@10.0.0.1:7000/", ("10.0.0.1", 7000), "app", "p@ss", 0, "redis://10.0.0.1:7000"),
    ("REDIS://[::1]:6390/1", ("::1", 6390, 0, 0), None, None, 1, "redis://[::1]:6390/1"),
])
def test_tcp(url, addr, user, password, db, name):
    u = parse_redis_url(url, resolve=fake_resolve)
    assert u.addrs[0][1] == addr
    assert (u.user, u.password, u.db, u.name) == (user, password, db, name)
    assert password is None or password not in u.name


@pytest.mark.parametrize("url,path,user,password,db", [
    ("unix:/run/redis/redis.sock", "/run/redis/redis.sock", None, None, 0),
    ("unix:///run/redis.sock?db=3", "/run/redis.sock", None, None, 3),
    ("unix://app:pw@/run/redis.sock", "/run/redis.sock", "app", "pw", 0),
    ("unix::pw@/tmp/r.sock?db=1", "/tmp/r.sock", None, "pw", 1),
])
def test_unix(url, path, user, password, db):
    u = parse_redis_url(url)
    assert u.addrs == [(socket.AF_UNIX, path)]
    assert (u.user, u.password, u.db) == (user, password, db)
    assert "pw" not in u.name


@pytest.mark.parametrize("url,msg", [
    ("http://127.0.0.1:6379", 'invalid URL prefix in "http://127.0.0.1:6379"'),
    ("127.0.0.1:6379", "invalid URL prefix"),
    ("redis://127.0.0.1:0", "invalid port"),
    ("redis://127.0.0.1:99999", "invalid port"),
    ("redis://127.0.0.1:", "invalid port"),
    ("redis://127.0.0.1:6379/x", 'invalid database number "x"'),
    ("redis://:6379", "no host"),
    ("redis://[::1:6379", "invalid IPv6 address"),
    ("redis://user@127.0.0.1", "no password"),
    ("redis://nowhere.invalid:6379", "host not found"),
    ("unix:relative.sock", "invalid unix socket path"),
    ("unix:/tmp/r.sock?database=1", 'invalid parameter "database=1"'),
])
def test_refused(url, msg):
    with pytest.raises(RedisURLError) as e:
        parse_redis_url(url, resolve=fake_resolve)
    assert msg in str(e.value)
