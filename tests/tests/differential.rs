//! The differential suite: the same seeded random command sequences run on `MemoryBackend` and a
//! real `redis-server`, and every reply is compared, error replies and TTLs included.
//!
//! The seed is fixed, so a run is reproducible; set `REDTAIL_DIFF_SEED` (a number) to explore
//! others and `REDTAIL_DIFF_CASES` to change how many sequences run.

use std::sync::LazyLock;

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use redtail_core::{Backend, Cmd, Key, Namespace, Script, Value};
use redtail_tests::{Ctx, Deployment, MemoryBackend};

/// One step of a sequence: a command on one of three keys, or a script.
#[derive(Debug, Clone)]
enum Step {
    Command(&'static str, Vec<Arg>),
    Script(usize, Vec<Arg>),
}

/// An argument: a key of the sequence (by index) or a literal.
#[derive(Debug, Clone)]
enum Arg {
    Key(usize),
    Lit(String),
}

const VALUES: &[&str] = &["1", "10", "-5", "abc", "", "3.5", "9223372036854775807", "0", "+1", "01", "x y"];
const SCORES: &[&str] = &["1", "2", "2.5", "-1", "inf", "-inf", "0", "nan", "abc", "1e3"];
const FIELDS: &[&str] = &["f1", "f2", "f3"];
const MEMBERS: &[&str] = &["m1", "m2", "m3", "m4"];
const INDEXES: &[&str] = &["0", "1", "-1", "2", "-2", "10", "-10"];
const SECONDS: &[&str] = &["100", "1000", "-1", "0", "abc", "86400"];
const STREAM_IDS: &[&str] = &["1-1", "1-2", "2-0", "3", "0-0", "2-*", "5-5"];

/// Scripts from the shapes the crates' scripts use: counters with TTLs, conversions, errors.
static SCRIPTS: LazyLock<Vec<Script>> = LazyLock::new(|| {
    [
        "return redis.call('INCR', KEYS[1])",
        "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) redis.call('EXPIRE', KEYS[1], 100, 'NX') return n",
        "return redis.call('GET', KEYS[1])",
        "return {1, 2.7, -3.2, 'x', false, true}",
        "return {1, nil, 3}",
        "return redis.pcall('INCR', KEYS[1])",
        // Hash order is not part of the contract (small hashes keep insertion order on the server).
        "local t = redis.call('HGETALL', KEYS[1]) table.sort(t) return t",
        "return redis.status_reply('FINE')",
        "return redis.error_reply('MYERR custom')",
        "return redis.call('SET', KEYS[1], ARGV[1])",
        "local t = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES') return #t",
        "return cjson.encode({a = 1, b = {1, 2, 3}})",
        "local v = cjson.decode('{\"n\": 5, \"s\": \"x\", \"l\": [1, 2]}') return {v.n, v.s, #v.l}",
        "return tonumber(ARGV[1])",
        "return redis.call('TTL', KEYS[1]) >= -2",
        "return redis.sha1hex(ARGV[1])",
        "return redis.call('LRANGE', KEYS[1], 0, -1)",
        "return redis.call('EXISTS', KEYS[1], KEYS[2])",
        // Bad scripts: a syntax error, a runtime error, a command scripts may not run.
        "return 1 +",
        "return nil .. 'x'",
        "return redis.call('SUBSCRIBE', 'channel')",
        "return redis.call()",
        "return redis.call('GET', {})",
    ]
    .iter()
    .map(|source| Script::new("differential", *source))
    .collect()
});

fn lit(choices: &'static [&'static str]) -> impl Strategy<Value = Arg> {
    proptest::sample::select(choices).prop_map(|s| Arg::Lit(s.to_owned()))
}

fn key() -> impl Strategy<Value = Arg> {
    (0usize..3).prop_map(Arg::Key)
}

fn word(w: &'static str) -> Arg {
    Arg::Lit(w.to_owned())
}

/// Optional trailing words, each present or not, in order.
fn flags(words: &'static [&'static str]) -> impl Strategy<Value = Vec<Arg>> {
    proptest::collection::vec(proptest::bool::ANY, words.len())
        .prop_map(move |on| words.iter().zip(on).filter(|(_, on)| *on).map(|(w, _)| word(w)).collect())
}

fn cmd(name: &'static str, args: impl Strategy<Value = Vec<Arg>> + 'static) -> BoxedStrategy<Step> {
    args.prop_map(move |args| Step::Command(name, args)).boxed()
}

fn step() -> impl Strategy<Value = Step> {
    let strings = prop_oneof![
        cmd("GET", key().prop_map(|k| vec![k])),
        cmd(
            "SET",
            (key(), lit(VALUES), flags(&["NX"]), flags(&["GET"]))
                .prop_map(|(k, v, nx, get)| [vec![k, v], nx, get].concat())
        ),
        cmd(
            "SET",
            (key(), lit(VALUES), lit(&["EX", "PX"]), lit(SECONDS)).prop_map(|(k, v, unit, n)| vec![k, v, unit, n])
        ),
        cmd("SET", (key(), lit(VALUES), flags(&["XX", "KEEPTTL"])).prop_map(|(k, v, f)| [vec![k, v], f].concat())),
        cmd("SETNX", (key(), lit(VALUES)).prop_map(|(k, v)| vec![k, v])),
        cmd("SETEX", (key(), lit(SECONDS), lit(VALUES)).prop_map(|(k, s, v)| vec![k, s, v])),
        cmd("PSETEX", (key(), lit(SECONDS), lit(VALUES)).prop_map(|(k, s, v)| vec![k, s, v])),
        cmd("GETDEL", key().prop_map(|k| vec![k])),
        cmd("GETSET", (key(), lit(VALUES)).prop_map(|(k, v)| vec![k, v])),
        cmd("MGET", (key(), key()).prop_map(|(a, b)| vec![a, b])),
        cmd("MSET", (key(), lit(VALUES), key(), lit(VALUES)).prop_map(|(a, x, b, y)| vec![a, x, b, y])),
        cmd("INCR", key().prop_map(|k| vec![k])),
        cmd("DECR", key().prop_map(|k| vec![k])),
        cmd("INCRBY", (key(), lit(VALUES)).prop_map(|(k, v)| vec![k, v])),
        cmd("DECRBY", (key(), lit(VALUES)).prop_map(|(k, v)| vec![k, v])),
        cmd("APPEND", (key(), lit(VALUES)).prop_map(|(k, v)| vec![k, v])),
        cmd("STRLEN", key().prop_map(|k| vec![k])),
    ];
    let keys =
        prop_oneof![
            cmd("DEL", (key(), key()).prop_map(|(a, b)| vec![a, b])),
            cmd("UNLINK", key().prop_map(|k| vec![k])),
            cmd("EXISTS", (key(), key()).prop_map(|(a, b)| vec![a, b])),
            cmd("TYPE", key().prop_map(|k| vec![k])),
            // GT and LT compare expiry times, so they are exercised with absolute times: two relative
            // times set a millisecond apart on the server would compare differently than in one instant.
            cmd("EXPIRE", (key(), lit(SECONDS), flags(&["NX", "XX"])).prop_map(|(k, s, f)| [vec![k, s], f].concat())),
            cmd("PEXPIRE", (key(), lit(SECONDS), flags(&["XX"])).prop_map(|(k, s, f)| [vec![k, s], f].concat())),
            cmd(
                "EXPIREAT",
                (key(), lit(&["1", "4102444800", "4102444900"]), flags(&["NX", "XX", "GT", "LT"]))
                    .prop_map(|(k, t, f)| [vec![k, t], f].concat())
            ),
            cmd(
                "PEXPIREAT",
                (key(), lit(&["1", "4102444800000", "4102444900000"]), flags(&["GT", "LT"])).prop_map(|(k, t, f)| [
                    vec![k, t],
                    f
                ]
                .concat())
            ),
            cmd("TTL", key().prop_map(|k| vec![k])),
            cmd("PTTL", key().prop_map(|k| vec![k])),
            cmd("EXPIRETIME", key().prop_map(|k| vec![k])),
            cmd("PEXPIRETIME", key().prop_map(|k| vec![k])),
            cmd("PERSIST", key().prop_map(|k| vec![k])),
            cmd("RENAME", (key(), key()).prop_map(|(a, b)| vec![a, b])),
            cmd("PING", flags(&["hello"])),
            cmd("TIME", Just(vec![])),
            cmd("DBSIZE", Just(vec![])),
            cmd("FLUSHALL", Just(vec![])),
            cmd("FLUSHDB", Just(vec![])),
            cmd("ECHO", lit(VALUES).prop_map(|v| vec![v])),
        ];
    let hashes = prop_oneof![
        cmd(
            "HSET",
            (key(), lit(FIELDS), lit(VALUES), flags(&["f9", "v9"]))
                .prop_map(|(k, f, v, x)| [vec![k, f, v], x].concat())
        ),
        cmd("HSETNX", (key(), lit(FIELDS), lit(VALUES)).prop_map(|(k, f, v)| vec![k, f, v])),
        cmd("HGET", (key(), lit(FIELDS)).prop_map(|(k, f)| vec![k, f])),
        cmd("HMGET", (key(), lit(FIELDS), lit(FIELDS)).prop_map(|(k, f, g)| vec![k, f, g])),
        cmd("HGETALL", key().prop_map(|k| vec![k])),
        cmd("HKEYS", key().prop_map(|k| vec![k])),
        cmd("HVALS", key().prop_map(|k| vec![k])),
        cmd("HDEL", (key(), lit(FIELDS)).prop_map(|(k, f)| vec![k, f])),
        cmd("HEXISTS", (key(), lit(FIELDS)).prop_map(|(k, f)| vec![k, f])),
        cmd("HLEN", key().prop_map(|k| vec![k])),
        cmd("HINCRBY", (key(), lit(FIELDS), lit(VALUES)).prop_map(|(k, f, v)| vec![k, f, v])),
    ];
    let lists = prop_oneof![
        cmd("LPUSH", (key(), lit(VALUES), lit(VALUES)).prop_map(|(k, a, b)| vec![k, a, b])),
        cmd("RPUSH", (key(), lit(VALUES)).prop_map(|(k, v)| vec![k, v])),
        cmd("LPOP", (key(), flags(&["2"])).prop_map(|(k, n)| [vec![k], n].concat())),
        cmd("RPOP", (key(), lit(&["0", "1", "5", "-1"])).prop_map(|(k, n)| vec![k, n])),
        cmd("RPOP", key().prop_map(|k| vec![k])),
        cmd("LRANGE", (key(), lit(INDEXES), lit(INDEXES)).prop_map(|(k, a, b)| vec![k, a, b])),
        cmd("LLEN", key().prop_map(|k| vec![k])),
        cmd("LINDEX", (key(), lit(INDEXES)).prop_map(|(k, i)| vec![k, i])),
        cmd("LREM", (key(), lit(&["0", "1", "-1", "2"]), lit(VALUES)).prop_map(|(k, n, v)| vec![k, n, v])),
        cmd("LTRIM", (key(), lit(INDEXES), lit(INDEXES)).prop_map(|(k, a, b)| vec![k, a, b])),
        cmd(
            "LMOVE",
            (key(), key(), lit(&["LEFT", "RIGHT"]), lit(&["LEFT", "RIGHT"])).prop_map(|(a, b, x, y)| vec![a, b, x, y])
        ),
        cmd("RPOPLPUSH", (key(), key()).prop_map(|(a, b)| vec![a, b])),
    ];
    let sets = prop_oneof![
        cmd("SADD", (key(), lit(MEMBERS), lit(MEMBERS)).prop_map(|(k, a, b)| vec![k, a, b])),
        cmd("SREM", (key(), lit(MEMBERS)).prop_map(|(k, m)| vec![k, m])),
        cmd("SMEMBERS", key().prop_map(|k| vec![k])),
        cmd("SISMEMBER", (key(), lit(MEMBERS)).prop_map(|(k, m)| vec![k, m])),
        cmd("SCARD", key().prop_map(|k| vec![k])),
    ];
    let zsets = prop_oneof![
        cmd(
            "ZADD",
            (key(), flags(&["NX", "XX", "GT", "LT", "CH"]), lit(SCORES), lit(MEMBERS)).prop_map(|(k, f, s, m)| [
                vec![k],
                f,
                vec![s, m]
            ]
            .concat())
        ),
        cmd(
            "ZADD",
            (key(), lit(SCORES), lit(MEMBERS), lit(SCORES), lit(MEMBERS))
                .prop_map(|(k, s, m, t, n)| vec![k, s, m, t, n])
        ),
        cmd("ZADD", (key(), lit(SCORES), lit(MEMBERS)).prop_map(|(k, s, m)| vec![k, word("INCR"), s, m])),
        cmd("ZREM", (key(), lit(MEMBERS)).prop_map(|(k, m)| vec![k, m])),
        cmd("ZSCORE", (key(), lit(MEMBERS)).prop_map(|(k, m)| vec![k, m])),
        cmd("ZINCRBY", (key(), lit(SCORES), lit(MEMBERS)).prop_map(|(k, s, m)| vec![k, s, m])),
        cmd("ZCARD", key().prop_map(|k| vec![k])),
        cmd(
            "ZCOUNT",
            (key(), lit(&["-inf", "1", "(1", "2"]), lit(&["+inf", "2", "(2.5"])).prop_map(|(k, a, b)| vec![k, a, b])
        ),
        cmd("ZRANK", (key(), lit(MEMBERS)).prop_map(|(k, m)| vec![k, m])),
        cmd(
            "ZRANGE",
            (key(), lit(INDEXES), lit(INDEXES), flags(&["REV", "WITHSCORES"])).prop_map(|(k, a, b, f)| [
                vec![k, a, b],
                f
            ]
            .concat())
        ),
        cmd(
            "ZRANGE",
            (key(), lit(&["-inf", "1", "(1"]), lit(&["+inf", "2", "(2.5"]), flags(&["WITHSCORES"]))
                .prop_map(|(k, a, b, f)| [vec![k, a, b, word("BYSCORE")], f].concat())
        ),
        cmd(
            "ZRANGE",
            (key(), lit(&["1", "0"]), lit(&["1", "2", "-1"])).prop_map(|(k, o, n)| vec![
                k,
                word("-inf"),
                word("+inf"),
                word("BYSCORE"),
                word("LIMIT"),
                o,
                n
            ])
        ),
        cmd(
            "ZRANGEBYSCORE",
            (key(), lit(&["-inf", "1", "(1", "x"]), lit(&["+inf", "2"]), flags(&["WITHSCORES"]))
                .prop_map(|(k, a, b, f)| [vec![k, a, b], f].concat())
        ),
        cmd("ZREMRANGEBYSCORE", (key(), lit(&["-inf", "1"]), lit(&["2", "(2.5"])).prop_map(|(k, a, b)| vec![k, a, b])),
        cmd("ZREMRANGEBYRANK", (key(), lit(INDEXES), lit(INDEXES)).prop_map(|(k, a, b)| vec![k, a, b])),
        cmd("ZPOPMIN", (key(), flags(&["2"])).prop_map(|(k, n)| [vec![k], n].concat())),
        cmd("ZPOPMAX", key().prop_map(|k| vec![k])),
    ];
    let streams = prop_oneof![
        cmd("XADD", (key(), lit(STREAM_IDS), lit(FIELDS), lit(VALUES)).prop_map(|(k, id, f, v)| vec![k, id, f, v])),
        cmd(
            "XADD",
            (key(), lit(&["1", "2", "0"]), lit(STREAM_IDS)).prop_map(|(k, n, id)| vec![
                k,
                word("MAXLEN"),
                n,
                id,
                word("f"),
                word("v")
            ])
        ),
        cmd("XLEN", key().prop_map(|k| vec![k])),
        cmd("XRANGE", (key(), lit(&["-", "1", "1-2"]), lit(&["+", "2", "5-5"])).prop_map(|(k, a, b)| vec![k, a, b])),
        cmd(
            "XREVRANGE",
            (key(), lit(&["+", "2"]), lit(&["-", "1"]), flags(&["COUNT", "1"])).prop_map(|(k, a, b, c)| [
                vec![k, a, b],
                c
            ]
            .concat())
        ),
        cmd("XDEL", (key(), lit(STREAM_IDS)).prop_map(|(k, id)| vec![k, id])),
        cmd("XTRIM", (key(), lit(&["0", "1", "3"])).prop_map(|(k, n)| vec![k, word("MAXLEN"), n])),
        cmd(
            "XREAD",
            (key(), lit(&["0", "1-1", "2"])).prop_map(|(k, id)| vec![word("COUNT"), word("2"), word("STREAMS"), k, id])
        ),
    ];
    let scripts = (0..SCRIPTS.len(), lit(VALUES)).prop_map(|(i, v)| Step::Script(i, vec![v]));
    prop_oneof![3 => strings, 2 => keys, 2 => hashes, 2 => lists, 1 => sets, 2 => zsets, 2 => streams, 1 => scripts]
}

/// Replies made comparable: orderless collections sorted, script errors by error code (their
/// line details differ between interpreters). TTLs are compared by [`same`].
fn normalize(name: &str, reply: Value) -> Value {
    match (name, reply) {
        ("SMEMBERS" | "HKEYS" | "HVALS", Value::Array(mut items)) => {
            items.sort_by_key(|v| format!("{v:?}"));
            Value::Array(items)
        }
        ("HGETALL", Value::Array(items)) => {
            let mut pairs: Vec<Vec<Value>> = items.chunks(2).map(<[Value]>::to_vec).collect();
            pairs.sort_by_key(|p| format!("{p:?}"));
            Value::Array(pairs.concat())
        }
        ("SCRIPT", Value::Error(e)) => Value::from(e.code()),
        (_, other) => other,
    }
}

/// Whether two normalized replies agree; times may differ by the clock skew of one run (the
/// two backends read their clocks milliseconds apart, and TTL rounds to seconds).
fn same(name: &str, real: &Value, fake: &Value) -> bool {
    if name == "TIME" {
        let seconds = |v: &Value| match v {
            Value::Array(parts) => parts.first().and_then(|s| s.as_int().ok()),
            _ => None,
        };
        return matches!((seconds(real), seconds(fake)), (Some(a), Some(b)) if (a - b).abs() <= 1);
    }
    let tolerance = match name {
        "TTL" | "EXPIRETIME" => 1,
        "PTTL" | "PEXPIRETIME" => 1_500,
        _ => return real == fake,
    };
    match (real, fake) {
        (Value::Int(a), Value::Int(b)) if *a >= 0 && *b >= 0 => (a - b).abs() <= tolerance,
        _ => real == fake,
    }
}

fn build(step: &Step, keys: &[Key]) -> (String, Cmd) {
    let Step::Command(name, args) = step else { unreachable!("scripts are built by the caller") };
    let mut cmd = Cmd::new(name);
    for arg in args {
        cmd = match arg {
            Arg::Key(i) => cmd.key(&keys[*i]),
            Arg::Lit(s) => cmd.arg(s.as_str()),
        };
    }
    ((*name).to_owned(), cmd)
}

async fn run_on(backend: &dyn Backend, steps: &[Step], keys: &[Key]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    // Commands between scripts go in one pipeline; scripts run on their own.
    let mut batch: Vec<(String, Cmd)> = Vec::new();
    async fn flush(backend: &dyn Backend, batch: &mut Vec<(String, Cmd)>, out: &mut Vec<(String, Value)>) {
        let (names, cmds): (Vec<String>, Vec<Cmd>) = batch.drain(..).unzip();
        let replies = backend.pipeline(cmds).await.unwrap_or_else(|e| panic!("pipeline failed: {e}"));
        out.extend(names.into_iter().zip(replies).map(|(n, r)| (n.clone(), normalize(&n, r))));
    }
    for step in steps {
        match step {
            Step::Command(..) => batch.push(build(step, keys)),
            Step::Script(i, args) => {
                flush(backend, &mut batch, &mut out).await;
                let args = args.iter().map(|a| match a {
                    Arg::Key(_) => unreachable!("scripts take literal arguments"),
                    Arg::Lit(s) => redtail_core::Arg::from(s.as_str()),
                });
                let reply = match backend.eval(&SCRIPTS[*i], &keys[..2], args.collect()).await {
                    Ok(v) => v,
                    Err(e) => Value::Error(e.server().cloned().unwrap_or_else(|| panic!("script failed: {e}"))),
                };
                out.push(("SCRIPT".to_owned(), normalize("SCRIPT", reply)));
            }
        }
    }
    flush(backend, &mut batch, &mut out).await;
    out
}

#[test]
fn memory_backend_replies_like_redis_server() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    // A server of its own: the sequences use FLUSHALL and DBSIZE.
    let ctx = runtime.block_on(Ctx::owned(Deployment::Standalone, |c| c));
    let seed: u64 = std::env::var("REDTAIL_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_125);
    let cases: u32 = std::env::var("REDTAIL_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3_000);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let case = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&proptest::collection::vec(step(), 1..25), |steps| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Each case gets fresh keys on both sides; all three share a slot for multi-key commands.
        let ns = Namespace::new(format!("{}d{n}", ctx.ns.prefix())).expect("valid prefix").tagged("k");
        let keys: Vec<Key> = (0..3).map(|i| ns.key([i.to_string()])).collect();
        let memory = MemoryBackend::new();
        let (real, fake) = runtime.block_on(async {
            ctx.backend.call(Cmd::new("FLUSHALL")).await.expect("flush before the case");
            let real = run_on(ctx.backend.as_ref(), &steps, &keys).await;
            let fake = run_on(&memory, &steps, &keys).await;
            (real, fake)
        });
        prop_assert_eq!(real.len(), fake.len());
        for (i, ((name, r), (_, f))) in real.iter().zip(&fake).enumerate() {
            prop_assert!(
                same(name, r, f),
                "step {} ({}): redis-server {:?}, MemoryBackend {:?}, in {:?}",
                i,
                name,
                r,
                f,
                steps
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("MemoryBackend differs from redis-server (seed {seed}): {e}");
    }
}
