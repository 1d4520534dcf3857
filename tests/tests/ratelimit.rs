//! Rate limits on standalone, cluster, sentinel and the in-memory backend.

use std::{sync::Arc, time::Duration};

use redtail_ratelimit::{Algorithm, Decision, OnFailure, Policy, RateLimiter};
use redtail_tests::{Ctx, Deployment, Env, Target, TestResult, for_each_backend};

for_each_backend!(
    a_thousand_concurrent_checks_admit_exactly_the_limit,
    several_policies_are_all_or_nothing_on_one_slot
);

fn limiter(env: &Env) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(env.backend.clone(), env.ns.child("rl")))
}

async fn a_thousand_concurrent_checks_admit_exactly_the_limit(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = limiter(&env);
    for algorithm in [Algorithm::Gcra, Algorithm::SlidingLog, Algorithm::FixedWindow] {
        let policy = Policy::new("api", 100, Duration::from_secs(600)).with_algorithm(algorithm);
        let subject = format!("user-{algorithm:?}");
        let tasks: Vec<_> = (0..1_000)
            .map(|_| {
                let (limiter, policy, subject) = (Arc::clone(&limiter), policy.clone(), subject.clone());
                tokio::spawn(async move { limiter.check(&subject, &[policy]).await })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            allowed += usize::from(task.await??.is_allowed());
        }
        assert_eq!(allowed, 100, "{algorithm:?}");
    }
    Ok(())
}

async fn several_policies_are_all_or_nothing_on_one_slot(target: Target) -> TestResult {
    let env = Env::new(target).await;
    let limiter = limiter(&env);
    let policies = [Policy::API, Policy::YOUTUBE_DOWNLOAD, Policy::MEDIA_REQUEST];
    for _ in 0..5 {
        assert!(limiter.check("u1", &policies).await?.is_allowed());
    }
    let refused = limiter.check("u1", &policies).await?;
    assert!(matches!(&refused, Decision::Limited { violated, .. } if violated == &vec!["youtube"]), "{refused:?}");
    // The refused request was charged to neither of the others.
    let Decision::Allowed { policies: states, .. } =
        limiter.peek("u1", &[Policy::API, Policy::MEDIA_REQUEST], 1).await?
    else {
        panic!("api and media requests must still allow");
    };
    assert_eq!((states[0].remaining, states[1].remaining), (94, 14));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_neither_fails_nor_counts_twice() -> TestResult {
    let ctx = Ctx::owned(Deployment::Standalone, |c| c).await;
    let limiter = RateLimiter::new(ctx.backend.clone(), ctx.ns.child("rl"));
    let policy = Policy::new("p", 10, Duration::from_secs(600)).with_algorithm(Algorithm::FixedWindow);
    for i in 0..10 {
        if i == 5 {
            ctx.servers.script_flush()?;
        }
        assert!(limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed(), "request {i}");
    }
    assert!(!limiter.check("u", &[policy]).await?.is_allowed(), "exactly 10 were counted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_mode_does_what_it_says_while_redis_is_down() -> TestResult {
    let ctx = Ctx::owned(Deployment::Standalone, |c| c.with_command_timeout(Duration::from_millis(300))).await;
    let limiter = RateLimiter::new(ctx.backend.clone(), ctx.ns.child("rl"));
    let open = Policy::new("open", 1, Duration::from_secs(60)).with_on_failure(OnFailure::Open);
    let closed = Policy::new("closed", 100, Duration::from_secs(60));
    let local = Policy::new("local", 10, Duration::from_secs(60)).with_on_failure(OnFailure::Local { instances: 2 });
    assert!(limiter.check("u", std::slice::from_ref(&open)).await?.is_allowed());
    let port = ctx.servers.kill_primary()?;

    let decision = limiter.check("u", std::slice::from_ref(&open)).await?;
    assert!(matches!(decision, Decision::Allowed { degraded: true, .. }), "{decision:?}");
    let decision = limiter.check("u", std::slice::from_ref(&closed)).await?;
    assert!(matches!(decision, Decision::Limited { degraded: true, .. }), "{decision:?}");
    // 10 a minute shared by 2 instances: this one admits 5.
    let mut admitted = 0;
    for _ in 0..8 {
        admitted += usize::from(limiter.check("v", std::slice::from_ref(&local)).await?.is_allowed());
    }
    assert_eq!(admitted, 5);
    assert_eq!(limiter.stats().degraded, 10);

    ctx.servers.restart_killed(port)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Decision::Allowed { degraded: false, .. } = limiter.check("w", std::slice::from_ref(&closed)).await? {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "limits did not come back from Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
