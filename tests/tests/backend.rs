//! Every `Backend` method, on standalone, cluster and sentinel deployments and the in-memory backend.

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock},
    time::Duration,
};

use redtail_core::{Bytes, Cmd, Cursor, Error, Key, Script, Value};
use redtail_tests::{Env, Target, TestResult, for_each_backend};

static INCR_BY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "test_incr_by",
        "return redis.call('INCRBY', KEYS[1], ARGV[1]) + redis.call('INCRBY', KEYS[2], ARGV[1])",
    )
});

for_each_backend!(
    call_reads_writes_and_reports_server_errors,
    call_refuses_commands_with_a_dedicated_method,
    pipeline_spans_slots_and_keeps_errors_in_place,
    transaction_is_atomic_and_refuses_cross_slot,
    eval_runs_scripts_on_one_slot,
    scan_finds_every_key_of_the_namespace_and_nothing_else,
    hostile_key_parts_round_trip_and_stay_in_namespace,
    publish_reaches_subscribers,
    blocking_commands_do_not_stall_other_traffic,
    blocking_commands_reply_as_redis_does,
    batched_gets_answer_each_caller_across_slots,
    batched_scripts_run_each_call_once_and_fail_alone,
);

static BATCHED_INCR_BY: LazyLock<Script> = LazyLock::new(|| {
    Script::batched(
        "test_batched_incr_by",
        "return batch(function(KEYS, ARGV) return redis.call('INCRBY', KEYS[1], ARGV[1]) end)",
    )
});

/// Keys spread over many slots (no hash tag), so cluster tests cross nodes.
fn spread_keys(ctx: &Env, n: usize) -> Vec<Key> {
    (0..n).map(|i| ctx.ns.key(["k", &i.to_string()])).collect()
}

async fn call_reads_writes_and_reports_server_errors(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let key = ctx.ns.key(["counter"]);
    assert!(ctx.backend.call(Cmd::new("GET").key(&key)).await?.is_nil());
    assert!(ctx.backend.call(Cmd::new("SET").key(&key).arg(41).arg("EX").arg(60)).await?.is_ok());
    assert_eq!(ctx.backend.call(Cmd::new("INCR").key(&key)).await?.as_int()?, 42);
    let ttl = ctx.backend.call(Cmd::new("TTL").key(&key)).await?.as_int()?;
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
    let list = ctx.ns.key(["list"]);
    ctx.backend.call(Cmd::new("RPUSH").key(&list).arg("a")).await?;
    let wrong = ctx.backend.call(Cmd::new("INCR").key(&list)).await;
    assert!(matches!(&wrong, Err(e) if e.is_server_code("WRONGTYPE")), "{wrong:?}");
    ctx.backend.call(Cmd::new("DEL").key(&list)).await?;
    Ok(())
}

async fn call_refuses_commands_with_a_dedicated_method(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    for name in ["MULTI", "SUBSCRIBE", "EVALSHA", "BLMOVE"] {
        let refused = ctx.backend.call(Cmd::new(name).arg("x")).await;
        assert!(matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("use Backend::")), "{name}: {refused:?}");
    }
    Ok(())
}

async fn pipeline_spans_slots_and_keeps_errors_in_place(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let keys = spread_keys(&ctx, 20);
    let slots: HashSet<u16> = keys.iter().map(Key::slot).collect();
    assert!(slots.len() > 10, "keys must cover several slots");
    let mut cmds: Vec<Cmd> =
        keys.iter().enumerate().map(|(i, k)| Cmd::new("SET").key(k).arg(i).arg("EX").arg(60)).collect();
    cmds.push(Cmd::new("LPUSH").key(&keys[3]).arg("x"));
    cmds.extend(keys.iter().map(|k| Cmd::new("GET").key(k)));
    let replies = ctx.backend.pipeline(cmds).await?;
    assert_eq!(replies.len(), 41);
    assert!(replies[..20].iter().all(Value::is_ok));
    assert!(matches!(&replies[20], Value::Error(e) if e.code() == "WRONGTYPE"), "{:?}", replies[20]);
    for (i, reply) in replies[21..].iter().enumerate() {
        assert_eq!(reply.as_int()?, i64::try_from(i)?);
    }
    Ok(())
}

async fn transaction_is_atomic_and_refuses_cross_slot(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let user = ctx.ns.tagged("user:1");
    let (a, b) = (user.key(["a"]), user.key(["b"]));
    let replies = ctx
        .backend
        .transaction(vec![
            Cmd::new("SET").key(&a).arg("x").arg("EX").arg(60),
            Cmd::new("INCR").key(&a),
            Cmd::new("INCRBY").key(&b).arg(5),
            Cmd::new("EXPIRE").key(&b).arg(60),
        ])
        .await?;
    assert!(replies[0].is_ok());
    assert!(matches!(&replies[1], Value::Error(e) if e.code() == "ERR"), "{:?}", replies[1]);
    assert_eq!(replies[2].as_int()?, 5, "later commands still ran");
    assert_eq!(replies.len(), 4);
    // A command the server refuses while queueing discards the whole transaction.
    let refused = ctx.backend.transaction(vec![Cmd::new("INCR").key(&b), Cmd::new("SET").key(&b)]).await;
    assert!(matches!(&refused, Err(e) if e.is_server_code("ERR")), "{refused:?}");
    let single = ctx.backend.transaction(vec![Cmd::new("GET").key(&b)]).await?;
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].as_int()?, 5);

    let elsewhere = ctx.ns.tagged("user:2").key(["a"]);
    assert_ne!(elsewhere.slot(), a.slot());
    let refused = ctx.backend.transaction(vec![Cmd::new("GET").key(&a), Cmd::new("GET").key(&elsewhere)]).await;
    assert!(matches!(refused, Err(Error::CrossSlot { what: "transaction", .. })), "{refused:?}");
    let refused = ctx.backend.transaction(vec![Cmd::new("DEL").key(&a).key(&elsewhere)]).await;
    assert!(matches!(refused, Err(Error::CrossSlot { .. })), "{refused:?}");
    assert_eq!(ctx.backend.call(Cmd::new("EXISTS").key(&a)).await?.as_int()?, 1, "refused transactions send nothing");
    Ok(())
}

async fn eval_runs_scripts_on_one_slot(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    // Several subjects on different slots, each script call on one slot.
    for user in ["u1", "u2", "u3", "u4"] {
        let ns = ctx.ns.tagged(user);
        let keys = [ns.key(["x"]), ns.key(["y"])];
        assert_eq!(ctx.backend.eval(&INCR_BY, &keys, vec![3.into()]).await?.as_int()?, 6);
        assert_eq!(ctx.backend.eval(&INCR_BY, &keys, vec![1.into()]).await?.as_int()?, 8);
        ctx.backend.call(Cmd::new("DEL").key(&keys[0]).key(&keys[1])).await?;
    }
    let crossing = [ctx.ns.tagged("u1").key(["x"]), ctx.ns.tagged("u2").key(["x"])];
    let refused = ctx.backend.eval(&INCR_BY, &crossing, vec![1.into()]).await;
    assert!(matches!(refused, Err(Error::CrossSlot { what: "script", .. })), "{refused:?}");
    let failing = Script::new("test_fails", "return redis.call('INCR', KEYS[1])");
    let list = ctx.ns.key(["list"]);
    ctx.backend.call(Cmd::new("RPUSH").key(&list).arg("a")).await?;
    let failed = ctx.backend.eval(&failing, std::slice::from_ref(&list), vec![]).await;
    assert!(matches!(&failed, Err(e) if e.server().is_some()), "{failed:?}");
    ctx.backend.call(Cmd::new("DEL").key(&list)).await?;
    Ok(())
}

async fn scan_finds_every_key_of_the_namespace_and_nothing_else(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let keys = spread_keys(&ctx, 120);
    let mut cmds: Vec<Cmd> = keys.iter().map(|k| Cmd::new("SET").key(k).arg(1).arg("EX").arg(60)).collect();
    // Neighbours the pattern must not match: another part name, and a part with glob characters.
    let near = [ctx.ns.key(["kk", "1"]), ctx.ns.key(["k*", "1"]), ctx.ns.key(["x"])];
    cmds.extend(near.iter().map(|k| Cmd::new("SET").key(k).arg(1).arg("EX").arg(60)));
    ctx.backend.pipeline(cmds).await?;

    let pattern = ctx.ns.pattern(["k"]);
    let mut found = HashSet::new();
    let mut cursor = Some(Cursor::START);
    let mut steps = 0;
    while let Some(at) = cursor {
        let page = ctx.backend.scan(at, &pattern, 50).await?;
        found.extend(page.keys.into_iter().map(|k| k.as_bytes().to_vec()));
        cursor = page.next;
        steps += 1;
        assert!(steps < 10_000, "scan does not finish");
    }
    let expected: HashSet<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    assert_eq!(found, expected);
    let all: Vec<Cmd> = keys.iter().chain(&near).map(|k| Cmd::new("DEL").key(k)).collect();
    ctx.backend.pipeline(all).await?;
    Ok(())
}

async fn hostile_key_parts_round_trip_and_stay_in_namespace(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let hostile: [&[u8]; 8] =
        [b"a}b:*{c", b"{", b"}", b"*", b"?[x]", b"with space", b"line\nbreak", &[0xff, 0xfe, 0x00, b'{']];
    let prefix = format!("{}:", ctx.ns.prefix());
    for part in hostile {
        let user = ctx.ns.tagged(part);
        let key = user.key(["v"]);
        assert_eq!(key.slot(), user.slot(), "a tag decides the slot");
        assert!(key.as_bytes().starts_with(prefix.as_bytes()));
        let plain = ctx.ns.key([b"p".as_slice(), part]);
        let replies = ctx
            .backend
            .transaction(vec![Cmd::new("SET").key(&key).arg(part).arg("EX").arg(60), Cmd::new("GET").key(&key)])
            .await?;
        assert_eq!(replies[1].clone().into_bytes()?.as_ref(), part);
        ctx.backend.call(Cmd::new("SET").key(&plain).arg(part).arg("EX").arg(60)).await?;
        assert_eq!(ctx.backend.call(Cmd::new("GET").key(&plain)).await?.into_bytes()?.as_ref(), part);
        ctx.backend.call(Cmd::new("DEL").key(&key)).await?;
        ctx.backend.call(Cmd::new("DEL").key(&plain)).await?;
    }
    Ok(())
}

async fn publish_reaches_subscribers(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let channel = format!("{}:events", ctx.ns.prefix());
    let mut subscription = ctx.backend.subscribe(&[&channel]).await?;
    // Delivery is at most once: a message published while the subscriber reconnects (a busy
    // machine can make sentinels fail over the shared primary) is lost, so publish until heard.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let message = loop {
        ctx.backend.publish(&channel, Bytes::from_static(b"hello")).await?;
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), subscription.next_message()).await {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "no message within 10 s");
    };
    assert_eq!((message.channel.as_str(), message.payload.as_ref()), (channel.as_str(), b"hello".as_slice()));
    assert!(matches!(ctx.backend.subscribe(&[]).await, Err(Error::InvalidInput(_))));
    Ok(())
}

async fn blocking_commands_do_not_stall_other_traffic(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let queue = ctx.ns.tagged("q");
    let (waiting, active) = (queue.key(["waiting"]), queue.key(["active"]));
    let backend = ctx.backend.clone();
    let cmd = Cmd::new("BLMOVE").key(&waiting).key(&active).arg("LEFT").arg("RIGHT").arg(10);
    let pop = tokio::spawn(async move { backend.blocking(cmd).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // If the push waited behind the blocking command, BLMOVE would time out with nil instead.
    ctx.backend.call(Cmd::new("RPUSH").key(&waiting).arg("job-1")).await?;
    let moved = pop.await??;
    assert_eq!(moved.into_bytes()?.as_ref(), b"job-1");
    let forever =
        ctx.backend.blocking(Cmd::new("BLMOVE").key(&waiting).key(&active).arg("LEFT").arg("RIGHT").arg(0)).await;
    assert!(matches!(forever, Err(Error::InvalidInput(_))));
    let timed_out = ctx.backend.blocking(Cmd::new("BZPOPMIN").key(&queue.key(["z"])).arg("0.1")).await?;
    assert!(timed_out.is_nil());
    ctx.backend.call(Cmd::new("DEL").key(&active)).await?;
    Ok(())
}

fn bulk(s: &str) -> Value {
    Value::from(s)
}

async fn blocking_commands_reply_as_redis_does(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let tag = ctx.ns.tagged("blocking");
    let (list, other, zset, stream) = (tag.key(["list"]), tag.key(["other"]), tag.key(["zset"]), tag.key(["stream"]));
    let name = |k: &Key| Value::Bytes(k.to_bytes());
    let backend = &ctx.backend;
    backend.call(Cmd::new("RPUSH").key(&list).arg("a").arg("b")).await?;
    let popped = backend.blocking(Cmd::new("BLPOP").key(&other).key(&list).arg(1)).await?;
    assert_eq!(popped, Value::Array(vec![name(&list), bulk("a")]));
    let popped = backend.blocking(Cmd::new("BRPOP").key(&list).arg(1)).await?;
    assert_eq!(popped, Value::Array(vec![name(&list), bulk("b")]));
    assert!(backend.blocking(Cmd::new("BLPOP").key(&list).arg("0.1")).await?.is_nil());

    backend.call(Cmd::new("ZADD").key(&zset).arg(1).arg("m1").arg(2.5).arg("m2")).await?;
    let min = backend.blocking(Cmd::new("BZPOPMIN").key(&zset).arg(1)).await?;
    assert_eq!(min, Value::Array(vec![name(&zset), bulk("m1"), bulk("1")]));
    let max = backend.blocking(Cmd::new("BZPOPMAX").key(&zset).arg(1)).await?;
    assert_eq!(max, Value::Array(vec![name(&zset), bulk("m2"), bulk("2.5")]));

    backend.call(Cmd::new("RPUSH").key(&list).arg("x")).await?;
    assert_eq!(backend.blocking(Cmd::new("BRPOPLPUSH").key(&list).key(&other).arg(1)).await?, bulk("x"));
    let moved = Cmd::new("BLMOVE").key(&other).key(&list).arg("LEFT").arg("RIGHT").arg(1);
    assert_eq!(backend.blocking(moved).await?, bulk("x"));

    backend.call(Cmd::new("XADD").key(&stream).arg("1-1").arg("f").arg("v")).await?;
    let read = backend
        .blocking(Cmd::new("XREAD").arg("COUNT").arg(1).arg("BLOCK").arg(100).arg("STREAMS").key(&stream).arg("0"))
        .await?;
    let entry = Value::Array(vec![bulk("1-1"), Value::Array(vec![bulk("f"), bulk("v")])]);
    assert_eq!(read, Value::Array(vec![Value::Array(vec![name(&stream), Value::Array(vec![entry])])]));
    let nothing_new = Cmd::new("XREAD").arg("BLOCK").arg(100).arg("STREAMS").key(&stream).arg("$");
    assert!(backend.blocking(nothing_new).await?.is_nil());

    // `$` means entries added while waiting.
    let waiter = Arc::clone(backend);
    let wait = Cmd::new("XREAD").arg("BLOCK").arg(5_000).arg("STREAMS").key(&stream).arg("$");
    let pending = tokio::spawn(async move { waiter.blocking(wait).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    backend.call(Cmd::new("XADD").key(&stream).arg("2-1").arg("g").arg("w")).await?;
    let woke = pending.await??.into_array()?;
    let entries = woke.into_iter().next().ok_or("no stream in reply")?.into_array()?;
    assert_eq!(
        entries[1],
        Value::Array(vec![Value::Array(vec![bulk("2-1"), Value::Array(vec![bulk("g"), bulk("w")])])])
    );
    backend.call(Cmd::new("DEL").key(&list).key(&other).key(&zset).key(&stream)).await?;
    Ok(())
}

async fn batched_gets_answer_each_caller_across_slots(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let keys = spread_keys(&ctx, 300);
    // Every third key is missing, and one holds a list: MGET reads both as nil.
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| !i.is_multiple_of(3)) {
        ctx.backend.call(Cmd::new("SET").key(key).arg(format!("v{i}")).arg("EX").arg(60)).await?;
    }
    ctx.backend.call(Cmd::new("RPUSH").key(&keys[0]).arg("a")).await?;
    ctx.backend.call(Cmd::new("EXPIRE").key(&keys[0]).arg(60)).await?;
    let reads = redtail_core::BatchedGet::new(Arc::clone(&ctx.backend));
    // Three rounds of all keys at once, so batches mix slots and repeat keys.
    let all: Vec<Key> = keys.iter().cycle().take(keys.len() * 3).cloned().collect();
    let answers = futures_util::future::join_all(all.iter().map(|key| reads.get(key))).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let i = i % keys.len();
        let expected = (!i.is_multiple_of(3)).then(|| Bytes::from(format!("v{i}")));
        assert_eq!(answer?, expected, "key {i}");
    }
    let many = reads.get_many(keys[1..3].to_vec()).await?;
    assert_eq!(many, vec![Some(Bytes::from("v1")), Some(Bytes::from("v2"))]);
    Ok(())
}

async fn batched_scripts_run_each_call_once_and_fail_alone(target: Target) -> TestResult {
    let ctx = Env::new(target).await;
    let keys = spread_keys(&ctx, 100);
    let list = ctx.ns.key(["a-list"]);
    ctx.backend.call(Cmd::new("RPUSH").key(&list).arg("a")).await?;
    ctx.backend.call(Cmd::new("EXPIRE").key(&list).arg(60)).await?;
    let script = redtail_core::BatchedScript::new(Arc::clone(&ctx.backend), &BATCHED_INCR_BY);
    // 500 concurrent calls over 100 keys of many slots, and one on the list among them.
    let calls = (0..500).map(|i| script.eval(vec![keys[i % 100].clone()], vec![(i % 100 + 1).into()]));
    let (answers, failed) =
        tokio::join!(futures_util::future::join_all(calls), script.eval(vec![list.clone()], vec![1.into()]));
    assert!(matches!(&failed, Err(e) if e.is_server_code("WRONGTYPE")), "{failed:?}");
    for (i, answer) in answers.into_iter().enumerate() {
        let step = (i % 100 + 1) as i64;
        let n = answer?.as_int()?;
        assert!(n % step == 0 && n / step >= 1 && n / step <= 5, "call {i} answered {n}");
    }
    for (i, key) in keys.iter().enumerate() {
        let value = ctx.backend.call(Cmd::new("GET").key(key)).await?.as_int()?;
        assert_eq!(value, 5 * (i as i64 + 1), "each call ran once on key {i}");
        ctx.backend.call(Cmd::new("DEL").key(key)).await?;
    }
    // One call's keys must share a slot, as for any script.
    let crossing = vec![ctx.ns.tagged("u1").key(["x"]), ctx.ns.tagged("u2").key(["x"])];
    assert!(matches!(script.eval(crossing, vec![1.into()]).await, Err(Error::CrossSlot { .. })));
    Ok(())
}
