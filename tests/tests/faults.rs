//! Failures injected into servers this test owns: restarts, pauses, dropped connections,
//! script cache flushes, failovers, demotions, and bad configuration.

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use redtail_connection::{Config, Error as ConnectError, Redis};
use redtail_core::{Backend, Bytes, Cmd, Error, Event, Key, Script, Value};
use redtail_tests::{Ctx, Deployment, FaultProxy, TestRedis, TestResult, behind_proxy, for_each_server};

static COUNT_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "test_count_run",
        "redis.call('EXPIRE', KEYS[1], 600) return redis.call('INCR', KEYS[1]) + 0 * redis.call('EXPIRE', KEYS[1], 600)",
    )
});

for_each_server!(noscript_after_script_flush_is_healed_and_the_script_runs_once);

async fn noscript_after_script_flush_is_healed_and_the_script_runs_once(kind: Deployment) -> TestResult {
    let ctx = Ctx::owned(kind, |c| c).await;
    let runs = ctx.ns.tagged("s").key(["runs"]);
    let keys = std::slice::from_ref(&runs);
    assert_eq!(ctx.backend.eval(&COUNT_RUN, keys, vec![]).await?.as_int()?, 1);
    ctx.servers.script_flush()?;
    // The server answers NOSCRIPT; the backend loads the script and runs it, once.
    assert_eq!(ctx.backend.eval(&COUNT_RUN, keys, vec![]).await?.as_int()?, 2);
    assert_eq!(ctx.backend.call(Cmd::new("GET").key(&runs)).await?.as_int()?, 2);
    Ok(())
}

/// Polls `f` every 20 ms until it succeeds; returns the time it took.
async fn until_ok<T, F, Fut>(limit: Duration, mut f: F) -> Result<(Duration, T), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redtail_core::Result<T>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok((started.elapsed(), v)),
            Err(e) if started.elapsed() > limit => return Err(format!("still failing after {limit:?}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_fast_and_recovers_within_two_seconds_of_restart() -> TestResult {
    let timeout = Duration::from_secs(1);
    let ctx = Ctx::owned(Deployment::Standalone, |c| c.with_command_timeout(timeout)).await;
    let key = ctx.ns.key(["k"]);
    ctx.backend.call(Cmd::new("SET").key(&key).arg(1).arg("EX").arg(600)).await?;
    let port = ctx.servers.kill_primary()?;
    for _ in 0..3 {
        let started = Instant::now();
        let failed = ctx.backend.call(Cmd::new("GET").key(&key)).await;
        let took = started.elapsed();
        assert!(matches!(&failed, Err(e) if e.is_unavailable()), "{failed:?}");
        assert!(took < timeout + Duration::from_millis(500), "a command hung for {took:?} during the outage");
    }
    ctx.servers.restart_killed(port)?;
    let (took, _) = until_ok(Duration::from_secs(10), || ctx.backend.call(Cmd::new("PING"))).await?;
    assert!(took < Duration::from_secs(2), "recovered {took:?} after the restart");
    // The server kept nothing (no persistence): writes work again on the fresh server.
    ctx.backend.call(Cmd::new("SET").key(&key).arg(2).arg("EX").arg(600)).await?;
    assert_eq!(ctx.backend.call(Cmd::new("GET").key(&key)).await?.as_int()?, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_reports_down_within_health_timeout_and_up_after() -> TestResult {
    let health_timeout = Duration::from_millis(500);
    let ctx = Ctx::owned(Deployment::Standalone, |c| c.with_health_timeout(health_timeout)).await;
    let health = ctx.redis.health().await;
    assert!(health.up, "{health:?}");
    assert_eq!(health.role.as_deref(), Some("master"));
    // The server the harness runs, by name and by its own version (Valkey 8 also says
    // `redis_version:7.2.4`, the Redis it is compatible with).
    let kind = redtail_testkit::ServerBinaries::current().kind;
    let major = match kind {
        redtail_testkit::ServerKind::Redis => '7',
        redtail_testkit::ServerKind::Valkey => '8',
    };
    assert_eq!(health.server.as_deref(), Some(kind.name()), "{health:?}");
    assert!(health.version.as_deref().is_some_and(|v| v.starts_with(major)), "{health:?}");
    assert!(health.used_memory.is_some_and(|m| m > 0));
    assert_eq!(health.maxmemory_policy.as_deref(), Some("noeviction"));
    assert_eq!(health.pool_connected, health.pool_size);

    ctx.servers.pause()?;
    let started = Instant::now();
    let down = ctx.redis.health().await;
    let took = started.elapsed();
    ctx.servers.resume()?;
    assert!(!down.up, "{down:?}");
    assert!(down.error.is_some());
    assert!(took < health_timeout + Duration::from_millis(300), "health took {took:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctx.redis.health().await.up {
        assert!(Instant::now() < deadline, "health stays down after resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let json = serde_json::to_value(ctx.redis.health().await)?;
    assert_eq!(json["up"], true);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_healed_and_subscriptions_resume() -> TestResult {
    let ctx = Ctx::owned(Deployment::Standalone, |c| c).await;
    let channel = format!("{}:ch", ctx.ns.prefix());
    let mut subscription = ctx.backend.subscribe(&[&channel]).await?;
    ctx.servers.drop_clients()?;
    until_ok(Duration::from_secs(5), || ctx.backend.call(Cmd::new("PING"))).await?;
    // Publish until the resubscribed connection hears it; the subscription was told of the gap
    // first, since messages published meanwhile were lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut gap = false;
    loop {
        ctx.backend.publish(&channel, Bytes::from_static(b"after")).await?;
        match tokio::time::timeout(Duration::from_millis(200), subscription.recv()).await {
            Ok(Some(Event::Gap)) => gap = true,
            Ok(Some(Event::Message(message))) => {
                assert_eq!(message.payload.as_ref(), b"after");
                break;
            }
            Ok(None) => panic!("subscription ended"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "subscription did not resume after the connections were dropped");
    }
    assert!(gap, "the lost connection was reported as a gap before the next message");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_keeps_every_slot_working() -> TestResult {
    let ctx = Ctx::owned(Deployment::Cluster, |c| c).await;
    let keys: Vec<Key> = (0..30).map(|i| ctx.ns.key(["k", &i.to_string()])).collect();
    let set = |v: i64| keys.iter().map(move |k| Cmd::new("SET").key(k).arg(v).arg("EX").arg(600)).collect::<Vec<_>>();
    ctx.backend.pipeline(set(1)).await?;
    let promoted = ctx.servers.cluster_failover()?;
    let (took, _) = until_ok(Duration::from_secs(15), || async {
        let replies = ctx.backend.pipeline(set(2)).await?;
        match replies.into_iter().find(|r| !r.is_ok()) {
            Some(bad) => Err(Error::UnexpectedReply { expected: "OK", got: bad.describe() }),
            None => Ok(()),
        }
    })
    .await?;
    for key in &keys {
        assert_eq!(ctx.backend.call(Cmd::new("GET").key(key)).await?.as_int()?, 2);
    }
    eprintln!("writes resumed {took:?} after failover to port {promoted}");
    Ok(())
}

/// After a failover, once a plain command has met the new slot table, script calls succeed on
/// every client, those held for scripts included: a script call is written at most once, so it
/// cannot follow a `MOVED` itself, and each held client used to fail its first script call after
/// the failover (seen as 503s from the demo's rate limits in the cluster soak, after recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cluster_failover_no_client_fails_its_first_script_call() -> TestResult {
    // Replica acknowledgements send every script through the clients held for writes (8).
    let ctx = Ctx::owned(Deployment::Cluster, |c| c.with_replica_acks(1, Duration::from_secs(2))).await;
    let keys: Vec<Key> = (0..64).map(|i| ctx.ns.tagged(format!("t{i}")).key(["runs"])).collect();
    let run_all = || {
        futures_util::future::join_all(
            keys.iter().map(|key| ctx.backend.eval(&COUNT_RUN, std::slice::from_ref(key), vec![])),
        )
    };
    for reply in run_all().await {
        reply?;
    }
    ctx.servers.cluster_failover()?;
    let probe = ctx.ns.key(["probe"]);
    until_ok(Duration::from_secs(15), || ctx.backend.call(Cmd::new("SET").key(&probe).arg(1).arg("EX").arg(600)))
        .await?;
    // The client that met the new table has shared it; give that a moment, then every script
    // call over every slot and client succeeds from the first round on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..5 {
        for reply in run_all().await {
            reply.map_err(|e| format!("round {round}: {e}"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_moves_writes_to_the_new_primary() -> TestResult {
    let ctx = Ctx::owned(Deployment::Sentinel, |c| c).await;
    let key = ctx.ns.key(["k"]);
    ctx.backend.call(Cmd::new("SET").key(&key).arg(1).arg("EX").arg(600)).await?;
    let new_primary = ctx.servers.sentinel_failover()?;
    until_ok(Duration::from_secs(20), || ctx.backend.call(Cmd::new("SET").key(&key).arg(2).arg("EX").arg(600))).await?;
    let stored = ctx.servers.admin(new_primary, &["GET", &key.to_string()])?;
    assert_eq!(stored.text().as_deref(), Some("2"), "the write went to the new primary");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demoted_primary_answering_readonly_is_left_for_the_new_primary() -> TestResult {
    let ctx = Ctx::owned(Deployment::Sentinel, |c| c).await;
    let key = ctx.ns.key(["k"]);
    ctx.backend.call(Cmd::new("SET").key(&key).arg(1).arg("EX").arg(600)).await?;
    let old_primary = ctx.servers.current_primary_port()?;
    ctx.servers.demote_primary()?;
    let direct = ctx.servers.admin(old_primary, &["SET", &key.to_string(), "x"])?;
    assert!(format!("{direct:?}").contains("READONLY"), "the old primary must now refuse writes: {direct:?}");
    // No restart, no manual action: the client leaves the read-only node and finds the primary.
    let (took, _) =
        until_ok(Duration::from_secs(40), || ctx.backend.call(Cmd::new("SET").key(&key).arg(2).arg("EX").arg(600)))
            .await?;
    let primary = ctx.servers.current_primary_port()?;
    assert_ne!(primary, old_primary);
    assert_eq!(ctx.servers.admin(primary, &["GET", &key.to_string()])?.text().as_deref(), Some("2"));
    eprintln!("writes resumed {took:?} after the demotion");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_one_clear_error() -> TestResult {
    let servers = TestRedis::owned(Deployment::Standalone)?;
    let port = servers.data_ports()[0];
    servers.admin(port, &["CONFIG", "SET", "requirepass", "right-horse"])?;
    for url in [format!("redis://:wrong-horse@127.0.0.1:{port}"), format!("redis://127.0.0.1:{port}")] {
        let config = Config::from_url(&url)?.with_connect_timeout(Duration::from_secs(3));
        let started = Instant::now();
        let failed = Redis::connect(config).await;
        assert!(started.elapsed() < Duration::from_secs(4), "connect retried past its timeout");
        let message = failed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("authentication") || message.contains("NOAUTH"), "{url}: {message}");
        assert!(!message.contains("wrong-horse"), "the password leaked into: {message}");
    }
    let config = Config::from_url(&format!("redis://:right-horse@127.0.0.1:{port}"))?;
    let redis = Redis::connect(config).await?;
    assert!(redtail_core::Backend::call(&redis, Cmd::new("PING")).await?.into_string()? == "PONG");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_fails_within_the_connect_timeout() -> TestResult {
    // A port nothing listens on: bind it, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))?.with_connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let failed = Redis::connect(config).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "connect took {took:?}");
    match failed {
        Err(ConnectError::Connect { target, reason, .. }) => {
            assert_eq!(target, format!("redis://127.0.0.1:{port}"));
            assert!(reason.contains("check that the server runs"), "{reason}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_in_flight_commands_and_refuses_new_ones() -> TestResult {
    let ctx = Ctx::new(Deployment::Standalone).await;
    let list = ctx.ns.key(["empty"]);
    let backend = ctx.backend.clone();
    let cmd = Cmd::new("BLPOP").key(&list).arg("0.5");
    let in_flight = tokio::spawn(async move { backend.blocking(cmd).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    ctx.redis.shutdown(Duration::from_secs(5)).await;
    assert_eq!(in_flight.await??, Value::Nil, "the in-flight command finished normally");
    let refused = ctx.backend.call(Cmd::new("PING")).await;
    assert!(matches!(refused, Err(Error::ShuttingDown)), "{refused:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_connections_work_and_return_maps() -> TestResult {
    let ctx = Ctx::owned(Deployment::Standalone, |c| c.with_resp3(true)).await;
    let hash = ctx.ns.key(["h"]);
    ctx.backend.call(Cmd::new("HSET").key(&hash).arg("f").arg("v")).await?;
    let all = ctx.backend.call(Cmd::new("HGETALL").key(&hash)).await?;
    assert_eq!(all, Value::Map(vec![(Value::from("f"), Value::from("v"))]));
    let replies =
        ctx.backend.transaction(vec![Cmd::new("HGET").key(&hash).arg("f"), Cmd::new("DEL").key(&hash)]).await?;
    assert_eq!(replies, vec![Value::from("v"), Value::Int(1)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_acks_answer_a_write_once_a_replica_holds_it() -> TestResult {
    let ctx = Ctx::owned(Deployment::Sentinel, |c| c.with_replica_acks(1, Duration::from_secs(2))).await;
    let primary = ctx.servers.current_primary_port()?;
    let replica = ctx.servers.data_ports().into_iter().find(|p| *p != primary).ok_or("no replica")?;
    let (script, set, piped, multi) =
        (ctx.ns.key(["script"]), ctx.ns.key(["set"]), ctx.ns.key(["piped"]), ctx.ns.key(["multi"]));
    // Every kind of write: answered only once the replica has it, so reading it there right
    // after cannot miss.
    ctx.backend.eval(&COUNT_RUN, std::slice::from_ref(&script), vec![]).await?;
    ctx.backend.call(Cmd::new("SET").key(&set).arg(1).arg("EX").arg(600)).await?;
    ctx.backend
        .pipeline(vec![Cmd::new("GET").key(&set), Cmd::new("SET").key(&piped).arg(1).arg("EX").arg(600)])
        .await?;
    ctx.backend.transaction(vec![Cmd::new("SET").key(&multi).arg(1).arg("EX").arg(600)]).await?;
    for key in [&script, &set, &piped, &multi] {
        let held = ctx.servers.admin(replica, &["GET", &key.to_string()])?;
        assert_eq!(held.text().as_deref(), Some("1"), "{key} is not on the replica when its write was answered");
    }

    // Two replicas asked, one exists: the write is applied but reported as not replicated.
    let config = Config::from_url(ctx.servers.url())?.with_replica_acks(2, Duration::from_millis(100));
    let strict = Redis::connect(config).await?;
    let key = ctx.ns.key(["strict"]);
    let started = Instant::now();
    match strict.eval(&COUNT_RUN, std::slice::from_ref(&key), vec![]).await {
        Err(Error::NotReplicated { acked: 1, wanted: 2, .. }) => {}
        other => panic!("expected NotReplicated with 1 of 2 replicas, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(100), "WAIT returned before its timeout");
    assert!(Error::NotReplicated { acked: 1, wanted: 2, waited: Duration::ZERO }.is_unavailable());
    assert_eq!(ctx.servers.admin(primary, &["GET", &key.to_string()])?.text().as_deref(), Some("1"));
    // Reads wait for no one.
    assert_eq!(strict.call(Cmd::new("GET").key(&key)).await?.as_int()?, 1);

    // Writes waiting out their `WAIT` stall neither each other nor reads: six writes, each
    // waiting 1 s for a replica that does not exist, end together, and reads answer meanwhile.
    let slow =
        Redis::connect(Config::from_url(ctx.servers.url())?.with_replica_acks(2, Duration::from_secs(1))).await?;
    let started = Instant::now();
    let writes: Vec<_> = (0..6)
        .map(|i| {
            let (slow, key) = (slow.clone(), ctx.ns.key(["slow", &i.to_string()]));
            tokio::spawn(async move { slow.call(Cmd::new("SET").key(&key).arg(1).arg("EX").arg(600)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(slow.call(Cmd::new("GET").key(&key)).await?.as_int()?, 1);
    assert!(writes.iter().any(|w| !w.is_finished()), "a read waited behind writes waiting for replicas");
    for write in writes {
        assert!(matches!(write.await?, Err(Error::NotReplicated { acked: 1, wanted: 2, .. })));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "six 1 s waits took {took:?}: they queued behind each other");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_acks_wait_on_the_node_of_each_written_slot_in_a_cluster() -> TestResult {
    let ctx = Ctx::owned(Deployment::Cluster, |c| c.with_replica_acks(1, Duration::from_secs(2))).await;
    let keys: Vec<Key> = (0..8).map(|i| ctx.ns.tagged(format!("t{i}")).key(["k"])).collect();
    let set = |key: &Key| Cmd::new("SET").key(key).arg(1).arg("EX").arg(600);
    ctx.backend.pipeline(keys.iter().map(set).collect()).await?;
    for key in &keys {
        ctx.backend.eval(&COUNT_RUN, std::slice::from_ref(key), vec![]).await?;
        ctx.backend.transaction(vec![set(key)]).await?;
    }
    // Each primary has one replica: asking for two fails on every node.
    let strict =
        Redis::connect(Config::from_url(ctx.servers.url())?.with_replica_acks(2, Duration::from_millis(50))).await?;
    for key in &keys {
        match strict.call(set(key)).await {
            Err(Error::NotReplicated { acked: 1, wanted: 2, .. }) => {}
            other => panic!("{key}: expected NotReplicated with 1 of 2 replicas, got {other:?}"),
        }
    }
    Ok(())
}

/// What a request may take beyond its timeout on a loaded two-core machine (the suites run two
/// tests at once): the wake-up of its task, not a wait on the server.
const SCHEDULING: Duration = Duration::from_millis(200);

/// A client whose only connection goes through a fault proxy to a standalone server.
async fn through_proxy(
    timeout: Duration,
) -> Result<(TestRedis, FaultProxy, Redis), Box<dyn std::error::Error + Send + Sync>> {
    let (servers, proxy, config) = behind_proxy().await;
    let config = config.with_pool_size(1).with_command_timeout(timeout);
    let redis = Redis::connect(config).await?;
    Ok((servers, proxy, redis))
}

/// A connection whose bytes stop flowing without a reset (a half-open connection: a dead route,
/// a dropped NAT entry) fails each request at its timeout, and is replaced: requests succeed
/// again within a few timeouts, on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_noticed_by_the_timeout_and_replaced() -> TestResult {
    let timeout = Duration::from_millis(300);
    let (servers, proxy, redis) = through_proxy(timeout).await?;
    let key = Key::from_raw(format!("{}:stall", servers.namespace().prefix()));
    redis.call(Cmd::new("SET").key(&key).arg("v").arg("EX").arg(60)).await?;
    proxy.stall();
    let started = Instant::now();
    let stalled = redis.call(Cmd::new("GET").key(&key)).await;
    let waited = started.elapsed();
    assert!(matches!(stalled, Err(Error::Timeout(_))), "{stalled:?}");
    assert!(waited < timeout + SCHEDULING, "a stalled request waited {waited:?}");
    // Every request is answered by its timeout; within a few, one is answered by a new connection.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        let sent = Instant::now();
        let reply = redis.call(Cmd::new("GET").key(&key)).await;
        slowest = slowest.max(sent.elapsed());
        if reply.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still stalled after 5 s: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("replaced after {:?}; slowest request {slowest:?}", started.elapsed());
    assert!(slowest < timeout + SCHEDULING, "a request waited {slowest:?}");
    Ok(())
}

/// A connection reset mid-traffic costs the requests in flight at most, then a new one serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_is_replaced() -> TestResult {
    let (servers, proxy, redis) = through_proxy(Duration::from_millis(300)).await?;
    let key = Key::from_raw(format!("{}:reset", servers.namespace().prefix()));
    redis.call(Cmd::new("SET").key(&key).arg("v").arg("EX").arg(60)).await?;
    proxy.reset();
    let (took, value) = until_ok(Duration::from_secs(5), || redis.call(Cmd::new("GET").key(&key))).await?;
    assert_eq!(value.into_opt_bytes()?.as_deref(), Some(&b"v"[..]));
    println!("served again after {took:?}");
    Ok(())
}

/// A 2 s latency spike against a 300 ms timeout: every request is answered by its timeout, and
/// once the spike ends requests succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_spike_never_holds_a_request_past_its_timeout() -> TestResult {
    let timeout = Duration::from_millis(300);
    let (servers, proxy, redis) = through_proxy(timeout).await?;
    let key = Key::from_raw(format!("{}:latency", servers.namespace().prefix()));
    redis.call(Cmd::new("SET").key(&key).arg("v").arg("EX").arg(60)).await?;
    proxy.set_latency(Duration::from_secs(2));
    let spike = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut failed = 0;
    while spike.elapsed() < Duration::from_secs(2) {
        let sent = Instant::now();
        if redis.call(Cmd::new("GET").key(&key)).await.is_err() {
            failed += 1;
        }
        slowest = slowest.max(sent.elapsed());
    }
    assert!(failed > 0, "no request met the spike");
    assert!(slowest < timeout + SCHEDULING, "a request waited {slowest:?}");
    proxy.set_latency(Duration::ZERO);
    let (took, _) = until_ok(Duration::from_secs(10), || redis.call(Cmd::new("GET").key(&key))).await?;
    println!("{failed} requests timed out in the spike; served again {took:?} after it");
    Ok(())
}

/// A slow link (the proxy's bandwidth cap): a large reply arrives no faster than the cap lets
/// it, a request whose reply cannot pass within its timeout is answered by the timeout, and
/// once the cap is lifted requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_link_delivers_at_its_rate_and_what_it_cannot_deliver_in_time_times_out() -> TestResult {
    let timeout = Duration::from_secs(3);
    let (servers, proxy, redis) = through_proxy(timeout).await?;
    let key = Key::from_raw(format!("{}:slow-link", servers.namespace().prefix()));
    let value = vec![b'x'; 256 * 1024];
    redis.call(Cmd::new("SET").key(&key).arg(value.clone()).arg("EX").arg(60)).await?;
    proxy.set_bandwidth(Some(256 * 1024));
    let started = Instant::now();
    let got = redis.call(Cmd::new("GET").key(&key)).await?.into_opt_bytes()?;
    let took = started.elapsed();
    assert_eq!(got.as_deref(), Some(&value[..]));
    assert!(took >= Duration::from_millis(900), "256 KiB came over a 256 KiB/s link in {took:?}");
    // Eight seconds of reply at this rate, against a 3 s timeout.
    proxy.set_bandwidth(Some(32 * 1024));
    let started = Instant::now();
    let slow = redis.call(Cmd::new("GET").key(&key)).await;
    let waited = started.elapsed();
    assert!(matches!(slow, Err(Error::Timeout(_))), "{slow:?}");
    assert!(waited < timeout + SCHEDULING, "a request on the slow link waited {waited:?}");
    proxy.set_bandwidth(None);
    let (again, reply) = until_ok(Duration::from_secs(15), || redis.call(Cmd::new("GET").key(&key))).await?;
    assert_eq!(reply.into_opt_bytes()?.as_deref(), Some(&value[..]));
    println!(
        "256 KiB at 256 KiB/s took {took:?}; at 32 KiB/s timed out after {waited:?}; served {again:?} after the cap was lifted"
    );
    Ok(())
}
