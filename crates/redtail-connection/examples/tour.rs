//! A tour of the `Backend` on a real Redis: every method once, then the health report.
//!
//! Run it with `cargo xtask tour` (which starts a server), or against your own server with
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run -p redtail-connection --example tour`.

use std::{sync::Arc, time::Duration};

use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Bytes, Cmd, Cursor, Namespace, Script};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    println!("connecting to {}", config.target());
    let redis = Redis::connect(config).await?;
    let backend: Arc<dyn Backend> = redis.clone().into();
    let ns = Namespace::new("tour")?;

    // One command: a caller-supplied id is escaped, so it cannot escape its namespace.
    let visitor = "a}b:*{c";
    let greeting = ns.key(["greeting", visitor]);
    backend.call(Cmd::new("SET").key(&greeting).arg("hello").arg("EX").arg(60)).await?;
    println!(
        "call:        SET {greeting} -> GET {:?}",
        backend.call(Cmd::new("GET").key(&greeting)).await?.into_string()?
    );

    // A pipeline: one round trip, one reply per command.
    let counters: Vec<_> = (0..5).map(|i| ns.key(["counter", &i.to_string()])).collect();
    let replies = backend.pipeline(counters.iter().map(|k| Cmd::new("INCR").key(k)).collect()).await?;
    println!("pipeline:    {} INCR replies: {replies:?}", replies.len());

    // A transaction over keys of one slot, and a script on the same slot.
    let user = ns.tagged("user-42");
    let (visits, seen) = (user.key(["visits"]), user.key(["seen"]));
    let replies = backend
        .transaction(vec![
            Cmd::new("INCR").key(&visits),
            Cmd::new("EXPIRE").key(&visits).arg(60),
            Cmd::new("SET").key(&seen).arg("now").arg("EX").arg(60),
        ])
        .await?;
    println!("transaction: {replies:?}");
    let script = Script::new("tour_double", "return redis.call('INCRBY', KEYS[1], redis.call('GET', KEYS[1]))");
    println!("eval:        visits doubled to {}", backend.eval(&script, &[visits], vec![]).await?.as_int()?);

    // SCAN with a pattern that only matches this namespace's counters.
    let mut found = 0;
    let mut cursor = Some(Cursor::START);
    while let Some(at) = cursor {
        let page = backend.scan(at, &ns.pattern(["counter"]), 100).await?;
        found += page.keys.len();
        cursor = page.next;
    }
    println!("scan:        {found} counter keys");
    let cleanup = counters.iter().map(|k| Cmd::new("DEL").key(k)).collect();
    backend.pipeline(cleanup).await?;

    // Publish and subscribe.
    let mut subscription = backend.subscribe(&["tour:news"]).await?;
    backend.publish("tour:news", Bytes::from_static(b"redtail says hi")).await?;
    if let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), subscription.next_message()).await {
        println!("pub/sub:     {} <- {:?}", message.channel, String::from_utf8_lossy(&message.payload));
    }

    // A blocking pop on its own connection: it times out after 0.2 s with nil.
    let popped = backend.blocking(Cmd::new("BLPOP").key(&ns.key(["empty"])).arg("0.2")).await?;
    println!("blocking:    BLPOP on an empty list -> {popped:?}");

    println!("health:      {}", serde_json::to_string(&redis.health().await)?);
    redis.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
