"""How a queue's server CPU per job grows with the jobs waiting behind, for four layouts.

A synthetic of the worker's per-job commands (no Lua), not redtail's queue: 20,000 jobs are
taken 50 at a time (LPOP), read, marked running, then deleted, with `depth` more waiting behind
them and a tenth as many delayed. Server CPU from INFO cpu (user + system) over the 20,000 jobs.

Layouts:
  hash-per-job   each job a hash of its own, the waiting list holds ids (redtail's and BullMQ's)
  one-hash       each job a field of one queue-wide hash, the list holds ids
  list-payload   the waiting list holds the job itself; a running job moves to a small hash
  list-index     list-payload plus a hash of waiting ids (to find a waiting job by id)
  buckets        each job a field of a hash of 1,000 jobs numbered together (`b:<id div 1000>`),
                 the list holds ids: found by id with one read, and the jobs taken one after
                 another share a bucket that stays in the processor's caches

Needs `pip install redis` and a server of its own, for example
  taskset -c 1 redis-server --port 6392 --save '' --appendonly no
  taskset -c 0 python3 bench/experiments/queue_layouts.py 6392 hash-per-job 1000000
It flushes that server.
"""
import sys
import time

import redis

LAYOUTS = ("hash-per-job", "one-hash", "list-payload", "list-index", "buckets")
JOBS, BATCH = 20_000, 50
DATA = b"x" * 170


def main(port: int, layout: str, depth: int) -> None:
    if layout not in LAYOUTS:
        sys.exit(f"layout must be one of {', '.join(LAYOUTS)}")
    r = redis.Redis(port=port)
    r.flushall()
    in_list = layout in ("list-payload", "list-index")
    pipe = r.pipeline(transaction=False)
    for i in range(JOBS + depth):
        if layout == "hash-per-job":
            pipe.hset(f"q:{{q}}:j:{i}", mapping={"d": DATA, "a": "0", "m": "3 1700000000 0 -"})
        elif layout == "one-hash":
            pipe.hset("q:{q}:jobs", str(i), b"3 1700000000 0 -\n" + DATA)
        elif layout == "buckets":
            pipe.hset(f"q:{{q}}:b:{i // 1000}", str(i), b"3 1700000000 0 -\n" + DATA)
        if layout == "list-index":
            pipe.hset("q:{q}:index", str(i), "w")
        pipe.rpush("q:{q}:wait", str(i).encode() + b" 3 1700000000 0 -\n" + DATA if in_list else str(i))
        if i % 1000 == 999:
            pipe.execute()
    for i in range(depth // 10):
        pipe.zadd("q:{q}:delayed", {f"d{i}": 4e12 + i})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()

    def cpu() -> float:
        info = r.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    before, done = cpu(), 0
    while done < JOBS:
        pipe = r.pipeline(transaction=False)
        pipe.lpop("q:{q}:wait", BATCH)
        pipe.llen("q:{q}:wait")
        pipe.zrange("q:{q}:delayed", 0, 0, withscores=True)
        pipe.pttl("q:{q}:lease")
        taken = pipe.execute()[0]
        ids = [t.split(b" ", 1)[0].decode() if in_list else t.decode() for t in taken]
        pipe = r.pipeline(transaction=False)
        for i in ids:
            if layout == "hash-per-job":
                pipe.hmget(f"q:{{q}}:j:{i}", "d", "a", "m")
                pipe.hset(f"q:{{q}}:j:{i}", "a", "1")
            elif layout == "one-hash":
                pipe.hget("q:{q}:jobs", i)
                pipe.hset("q:{q}:jobs", i, b"3 1700000000 1 -\n" + DATA)
            elif layout == "buckets":
                bucket = f"q:{{q}}:b:{int(i) // 1000}"
                pipe.hget(bucket, i)
                pipe.hset(bucket, i, b"3 1700000000 1 -\n" + DATA)
            else:
                pipe.hset("q:{q}:jobs", i, b"3 1700000000 1 -\n" + DATA)
                if layout == "list-index":
                    pipe.hdel("q:{q}:index", i)
            pipe.hset("q:{q}:run", i, "lease")
        pipe.execute()
        pipe = r.pipeline(transaction=False)
        for i in ids:
            pipe.hdel("q:{q}:run", i)
            if layout == "hash-per-job":
                pipe.delete(f"q:{{q}}:j:{i}")
            elif layout == "buckets":
                pipe.hdel(f"q:{{q}}:b:{int(i) // 1000}", i)
            else:
                pipe.hdel("q:{q}:jobs", i)
            pipe.incr("q:{q}:done")
        pipe.execute()
        done += len(ids)
    used = cpu() - before
    memory = r.info("memory")["used_memory_human"]
    print(f"layout={layout} depth={depth} server_cpu_us_per_job={used / JOBS * 1e6:.2f} keys={r.dbsize()} memory={memory}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
