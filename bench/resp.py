"""RESP reader cost: ngxws's hand-written Reader against hiredis's, on the replies ngxws reads.

    python -m bench.resp [--rounds 7] [--chunk 65536]

hiredis is the benchmark's peer only: install it where this process finds it
(``pip install --target /tmp/hiredis-bench hiredis`` and ``PYTHONPATH=/tmp/hiredis-bench``, or the
``ngxws[redis]`` extra). Each workload is a stream of replies, fed in ``--chunk``-byte pieces, all
of them read with ``gets()`` after each piece (what the client does after each recv): CPU time per
reply, the median of ``--rounds`` rounds, both readers alternately in the same process. Each
round also checks that both readers returned the same values.
"""

import argparse
import statistics
import sys
import time

from ngxws.core import resp

try:
    import hiredis
except ImportError:
    hiredis = None


def _bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


def workloads():
    payload = b"x" * 100
    ids = [b"17330000%05d-0" % i for i in range(1000)]
    entry = [b"*2\r\n" + _bulk(i) + b"*2\r\n" + _bulk(b"m") + _bulk(payload) for i in ids]
    return {
        # replies to a pipeline of PUBLISH / XADD: integers and stream ids
        "int replies (PUBLISH)": b":3\r\n" * 10000,
        "stream ids (XADD)": b"".join(_bulk(i) for i in ids) * 10,
        # what the subscriber connection reads: one array of three bulk strings per message
        "pub/sub messages, 100 B": (b"*3\r\n" + _bulk(b"message") + _bulk(b"chan.42")
                                    + _bulk(payload)) * 10000,
        "RESP3 pushes, 100 B": (b">3\r\n" + _bulk(b"message") + _bulk(b"chan.42")
                                + _bulk(payload)) * 10000,
        # a resume: XRANGE of 1000 entries (one reply), ten times
        "XRANGE, 1000 entries": (b"*1000\r\n" + b"".join(entry)) * 10,
        "large bulk, 1 MiB": _bulk(b"y" * (1 << 20)) * 20,
    }


def run(reader, data, chunk):
    out = []
    t0 = time.process_time()
    gets = reader.gets
    feed = reader.feed
    need = resp.NEED_DATA
    for i in range(0, len(data), chunk):
        feed(data[i:i + chunk])
        while True:
            v = gets()
            if v is need:
                break
            out.append(v)
    return time.process_time() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=65536)
    args = ap.parse_args(argv)
    if hiredis is None:
        print("hiredis is not importable: install it for the measurement (see the docstring)",
              file=sys.stderr)
        return 2
    makers = {
        "ngxws": lambda: resp.Reader(),
        "hiredis %s" % hiredis.__version__: lambda: hiredis.Reader(
            notEnoughData=resp.NEED_DATA, replyError=resp.ReplyError,
            protocolError=resp.ProtocolError),
    }
    print("chunk %d bytes, median of %d rounds, CPU µs per reply" % (args.chunk, args.rounds))
    print("| workload | replies | %s | ratio (ngxws / hiredis) |" % " | ".join(makers))
    print("|---|---|%s---|" % ("---|" * len(makers)))
    for name, data in workloads().items():
        times = {k: [] for k in makers}
        count = 0
        for _ in range(args.rounds):
            values = {}
            for k, make in makers.items():
                dt, out = run(make(), data, args.chunk)
                times[k].append(dt)
                values[k] = [list(v) if isinstance(v, list) else v for v in out]
            a, b = values.values()
            assert a == b, "the readers disagree on %s" % name
            count = len(a)
        med = {k: statistics.median(v) / count * 1e6 for k, v in times.items()}
        ours, theirs = med.values()
        print("| %s | %d | %s | %.2f |" % (name, count, " | ".join("%.3f" % m for m in med.values()),
                                          ours / theirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
