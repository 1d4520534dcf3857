//! Sessions on standalone, cluster, sentinel and the in-memory backend: the whole lifecycle,
//! concurrency, and TTLs on every key.

use std::{collections::HashSet, sync::Arc};

use media_api::presets::UserSession;
use redtail_core::{Cmd, Cursor};
use redtail_session::{Device, NewSession, SessionConfig, SessionStore};
use redtail_tests::{Env, Target, TestResult, for_each_backend};

for_each_backend!(
    lifecycle_from_login_to_logout_everywhere,
    invalidation_wins_over_concurrent_updates,
    a_thousand_concurrent_sessions_of_one_user_are_listed_and_ended,
    a_cap_of_five_holds_exactly_under_concurrency_and_within_one_second,
    a_session_is_ended_by_its_user_and_id_without_its_token,
);

fn store(env: &Env) -> Arc<SessionStore<UserSession>> {
    Arc::new(
        SessionStore::new(env.backend.clone(), SessionConfig::default().with_namespace(env.ns.child("sess")))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// `SessionStore::end`: an admin (or a "your devices" page) ends one session by user and id,
/// as `list` shows them; another user's id, a made-up id and a second try end nothing.
async fn a_session_is_ended_by_its_user_and_id_without_its_token(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let (first, _) = store.create("alice", UserSession::new("alice", "user"), NewSession::standard()).await?;
    let (second, _) = store.create("alice", UserSession::new("alice", "user"), NewSession::standard()).await?;
    let (bob, bobs) = store.create("bob", UserSession::new("bob", "user"), NewSession::standard()).await?;
    let first_id = store.get(first.as_str()).await?.ok_or("alice's first session is missing")?.id;

    assert!(!store.end("alice", &bobs.id).await?, "bob's session is not alice's to end");
    assert!(!store.end("alice", "not-a-session-id").await?);
    assert!(!store.end("alice", "AAAAAAAAAAAAAAAA").await?);
    assert!(store.end("alice", "").await.is_ok_and(|ended| !ended));
    assert!(store.end("", &first_id).await.is_err(), "an empty user id is refused");

    assert!(store.end("alice", &first_id).await?);
    assert!(!store.end("alice", &first_id).await?, "ended once");
    assert!(store.get(first.as_str()).await?.is_none());
    let left: Vec<String> = store.list("alice").await?.into_iter().map(|s| s.id).collect();
    assert_eq!(left.len(), 1);
    assert!(store.get(second.as_str()).await?.is_some_and(|s| s.id == left[0]));
    assert!(store.get(bob.as_str()).await?.is_some());
    Ok(())
}

async fn lifecycle_from_login_to_logout_everywhere(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let (token, created) = store.create("u1", UserSession::new("u1", "user"), NewSession::remember_me()).await?;
    let read = store.get(token.as_str()).await?.ok_or("session missing")?;
    assert_eq!((read.user_id.as_str(), read.data.role.as_str(), read.remember_me), ("u1", "user", true));
    assert_eq!(read.expires_at, created.expires_at);

    let mut admin = read.data.clone();
    admin.role = "admin".to_owned();
    assert!(store.update(token.as_str(), &admin).await?);
    // Privilege change: rotate.
    let rotated = store.rotate(token.as_str()).await?.ok_or("rotation failed")?;
    assert!(store.get(token.as_str()).await?.is_none());
    assert_eq!(store.get(rotated.as_str()).await?.map(|s| s.data.role), Some("admin".to_owned()));
    assert!(store.extend(rotated.as_str()).await?.is_some());

    let (other, _) = store.create("u1", UserSession::new("u1", "user"), NewSession::standard()).await?;
    let (someone_else, _) = store.create("u2", UserSession::new("u2", "user"), NewSession::standard()).await?;
    assert_eq!(store.list("u1").await?.len(), 2);
    assert!(store.invalidate(other.as_str()).await?);
    assert_eq!(store.list("u1").await?.len(), 1);
    assert_eq!(store.invalidate_all("u1").await?, 1);
    assert!(store.list("u1").await?.is_empty());
    assert!(store.get(someone_else.as_str()).await?.is_some(), "other users keep their sessions");

    // Ids and device details with JSON's special characters survive the server's Lua.
    let odd_user = "o\"dd\\ü/\n{x}";
    let device = Device::new(Some("2001:db8::1".to_owned()), Some("Mozilla/5.0 \"quoted\" \u{1F600}".to_owned()));
    let (odd, _) = store
        .create(odd_user, UserSession::new(odd_user, "user"), NewSession::standard().with_device(device.clone()))
        .await?;
    let read = store.get(odd.as_str()).await?.ok_or("odd session missing")?;
    assert_eq!((read.user_id.as_str(), read.device.as_ref()), (odd_user, Some(&device)));
    assert_eq!(store.invalidate_all(odd_user).await?, 1);

    // Every key written carries a TTL.
    let mut cursor = Some(Cursor::START);
    let mut seen = 0;
    while let Some(at) = cursor {
        let page = env.backend.scan(at, &env.ns.pattern(["sess"]), 100).await?;
        for key in page.keys {
            seen += 1;
            let ttl = env.backend.call(Cmd::new("PTTL").key(&key)).await?.as_int()?;
            assert!(ttl > 0, "{key} has no TTL");
        }
        cursor = page.next;
    }
    assert_eq!(seen, 2, "u2's session and its index");
    Ok(())
}

async fn invalidation_wins_over_concurrent_updates(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let (token, _) = store.create("u1", UserSession::new("u1", "user"), NewSession::standard()).await?;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (updater, own_token) = (Arc::clone(&store), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut data = UserSession::new("u1", "user");
            data.plex_id = Some(i.to_string());
            updater.update(own_token.as_str(), &data).await
        }));
        if i == 50 {
            let (invalidator, own_token) = (Arc::clone(&store), token.clone());
            tasks.push(tokio::spawn(async move { invalidator.invalidate(own_token.as_str()).await }));
        }
    }
    for task in tasks {
        task.await??;
    }
    assert!(store.get(token.as_str()).await?.is_none(), "an update resurrected an invalidated session");
    assert!(store.list("u1").await?.is_empty());
    Ok(())
}

/// With a cap of 5 per user: 1,000 concurrent creates leave exactly 5 live sessions (5 listed, 5
/// tokens that open one, 5 session keys beside the index), and 20 creates one after another,
/// within a second, give live counts 1, 2, 3, 4, 5, 5, 5, ... (The script used to count the new
/// session among those to evict, skip it, and evict one too few: 6 were left.)
async fn a_cap_of_five_holds_exactly_under_concurrency_and_within_one_second(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let config = SessionConfig::default().with_namespace(env.ns.child("sess")).with_max_sessions_per_user(Some(5));
    let store = Arc::new(SessionStore::<UserSession>::new(env.backend.clone(), config)?);
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.create("capped", UserSession::new("capped", "user"), NewSession::standard()).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await??.0);
    }
    assert_eq!(store.list("capped").await?.len(), 5);
    let mut open = 0;
    for token in &tokens {
        open += usize::from(store.get(token.as_str()).await?.is_some());
    }
    assert_eq!(open, 5, "tokens that open a session");
    // The session keys under the user's tag: the 5 sessions and the index.
    let pattern = env.ns.child("sess").pattern([] as [&str; 0]);
    let (mut cursor, mut keys) = (Cursor::START, 0);
    loop {
        let page = env.backend.scan(cursor, &pattern, 1000).await?;
        keys += page.keys.len();
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(keys, 6, "5 sessions and the index");

    let mut counts = Vec::new();
    for _ in 0..20 {
        store.create("serial", UserSession::new("serial", "user"), NewSession::standard()).await?;
        counts.push(store.list("serial").await?.len());
    }
    let expected: Vec<usize> = (1..=20).map(|n| n.min(5)).collect();
    assert_eq!(counts, expected);
    Ok(())
}

async fn a_thousand_concurrent_sessions_of_one_user_are_listed_and_ended(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let store = store(&env);
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(
                async move { store.create("busy", UserSession::new("busy", "user"), NewSession::standard()).await },
            )
        })
        .collect();
    let mut tokens = HashSet::new();
    for task in tasks {
        tokens.insert(task.await??.0);
    }
    assert_eq!(tokens.len(), 1_000);
    assert_eq!(store.list("busy").await?.len(), 1_000);
    assert_eq!(store.invalidate_all("busy").await?, 1_000);
    for token in tokens.iter().take(50) {
        assert!(store.get(token.as_str()).await?.is_none());
    }
    Ok(())
}

/// On a cluster while the slot of a user's sessions migrates, with one session already moved:
/// listing them and "log out everywhere" fail before they change anything (each script stops at
/// the moved key it could not declare, instead of reading it as a missing session and going on
/// without it), and both work once the slot has moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moved_mid_migration_stops_the_scripts_before_any_write() -> TestResult {
    let ctx = redtail_tests::Ctx::owned(redtail_tests::Deployment::Cluster, |c| c).await;
    let ns = ctx.ns.child("sess");
    let store =
        SessionStore::<UserSession>::new(ctx.backend.clone(), SessionConfig::default().with_namespace(ns.clone()))?;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(store.create("mover", UserSession::new("mover", "user"), NewSession::standard()).await?.0);
    }
    let (mut keys, mut cursor) = (Vec::new(), Some(Cursor::START));
    while let Some(at) = cursor {
        let page = ctx.backend.scan(at, &ns.pattern(Vec::<&str>::new()), 1_000).await?;
        keys.extend(page.keys);
        cursor = page.next;
    }
    let key_text = |k: &redtail_core::Key| String::from_utf8_lossy(k.as_bytes()).into_owned();
    let index = keys.iter().map(key_text).find(|k| k.ends_with(":i")).ok_or("no session index")?;
    let moved = keys.iter().map(key_text).find(|k| !k.ends_with(":i")).ok_or("no session key")?;
    let migration = ctx.servers.begin_slot_migration(&index)?;
    migration.migrate(&moved)?;

    let listed = store.list("mover").await.map(|sessions| sessions.len());
    assert!(listed.is_err(), "a list that cannot read every session fails, got {listed:?}");
    let ended = store.invalidate_all("mover").await;
    assert!(ended.is_err(), "log out everywhere fails rather than skip a session, got {ended:?}");
    // Nothing was deleted: the three sessions and their index are still in the slot, on one
    // node or the other, and the index still names all three. (Read on the nodes themselves: a
    // batched read of the three sessions is one MGET, which Redis refuses with TRYAGAIN while
    // they are split between two nodes.)
    let slot = migration.slot.to_string();
    let count = |port: u16| match ctx.servers.admin(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot]) {
        Ok(redtail_testkit::resp::Reply::Int(n)) => n,
        other => panic!("COUNTKEYSINSLOT answered {other:?}"),
    };
    assert_eq!((count(migration.source), count(migration.target)), (3, 1), "no session ended by the failed calls");
    let members = ctx.servers.admin(migration.source, &["ZCARD", &index])?;
    assert_eq!(members, redtail_testkit::resp::Reply::Int(3), "the index untouched");

    migration.finish()?;
    // Reads follow the `MOVED` and bring the client's slot table up to date (a script call,
    // written at most once, does not follow a redirection: docs/compatibility.md).
    for token in &tokens {
        assert!(store.get(token.as_str()).await?.is_some(), "every session survived the migration");
    }
    let listed = store.list("mover").await.map_err(|e| format!("list after the migration: {e:?}"))?;
    assert_eq!(listed.len(), 3);
    let ended = store.invalidate_all("mover").await.map_err(|e| format!("invalidate_all after: {e:?}"))?;
    assert_eq!(ended, 3);
    for token in &tokens {
        assert!(store.get(token.as_str()).await?.is_none());
    }
    Ok(())
}
