//! Rate limits on standalone, cluster, sentinel and the in-memory backend.

use std::{sync::Arc, time::Duration};

use redtail_ratelimit::{Algorithm, Decision, Policy, RateLimiter};
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
