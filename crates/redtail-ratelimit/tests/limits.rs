//! Limits over time, on the in-memory backend with a virtual clock.

use std::time::{Duration, SystemTime};

use redtail_core::{Backend, Cmd, Cursor, Namespace};
use redtail_ratelimit::{Algorithm, Decision, Error, Policy, RateLimiter, Result};
use redtail_testkit::{Clock, MemoryBackend};

/// 100 a minute, decided in process when Redis is down.
const API: Policy = Policy::new("api", 100, Duration::from_secs(60))
    .with_on_failure(redtail_ratelimit::OnFailure::Local { instances: 1 });
/// 5 an hour, counted exactly.
const YOUTUBE_DOWNLOAD: Policy =
    Policy::new("youtube", 5, Duration::from_secs(3_600)).with_algorithm(Algorithm::SlidingLog);
/// 20 an hour.
const MEDIA_REQUEST: Policy = Policy::new("media-request", 20, Duration::from_secs(3_600));

fn setup() -> (MemoryBackend, RateLimiter) {
    // On an hour's edge, so that the tests know where windows start.
    let hours = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 3_600);
    let redis =
        MemoryBackend::with_clock(Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs((hours + 1) * 3_600)))
            .auditing_script_keys();
    // The refusal cache runs on real time; these tests move a virtual clock instead, which the
    // limiter reads too (counters name their windows by the limiter's clock).
    let limiter = RateLimiter::new(redis.clone(), Namespace::new("rl").unwrap_or_else(|e| panic!("{e}")))
        .with_client_clock(redis.clock().clone().into())
        .with_refusal_cache(false);
    (redis, limiter)
}

/// Sends one request a second for `seconds` and returns the seconds at which requests passed.
async fn admitted(redis: &MemoryBackend, limiter: &RateLimiter, policy: &Policy, seconds: u64) -> Result<Vec<u64>> {
    let mut passed = Vec::new();
    for t in 0..seconds {
        // Bursts of 3 requests each second press on the limit.
        for _ in 0..3 {
            if limiter.check("u", std::slice::from_ref(policy)).await?.is_allowed() {
                passed.push(t);
            }
        }
        redis.clock().advance(Duration::from_secs(1));
    }
    Ok(passed)
}

fn most_in_any_window(passed: &[u64], window: u64) -> usize {
    passed.iter().map(|&start| passed.iter().filter(|&&t| t >= start && t < start + window).count()).max().unwrap_or(0)
}

#[tokio::test]
async fn sliding_log_never_admits_more_than_the_limit_in_any_window() -> Result<()> {
    let (redis, limiter) = setup();
    let policy = Policy::new("log", 10, Duration::from_secs(60)).with_algorithm(Algorithm::SlidingLog);
    let passed = admitted(&redis, &limiter, &policy, 300).await?;
    assert_eq!(most_in_any_window(&passed, 60), 10);
    assert_eq!(passed.len(), 50, "10 per minute over 5 minutes");
    Ok(())
}

#[tokio::test]
async fn gcra_keeps_the_rate_with_its_burst_tolerance() -> Result<()> {
    let (redis, limiter) = setup();
    // 10 a minute (one every 6 s), 2 at once.
    let policy = Policy::new("gcra", 10, Duration::from_secs(60)).with_burst(2);
    let passed = admitted(&redis, &limiter, &policy, 300).await?;
    // GCRA's guarantee: in any window of w seconds, at most burst + w / 6 requests.
    for window in [1, 6, 30, 60, 120] {
        let most = most_in_any_window(&passed, window);
        assert!(most as u64 <= 2 + window / 6, "{most} in a window of {window} s");
    }
    assert!((49..=52).contains(&passed.len()), "{} over 5 minutes", passed.len());
    Ok(())
}

#[tokio::test]
async fn fixed_window_admits_twice_the_limit_across_an_edge_as_documented() -> Result<()> {
    let (redis, limiter) = setup();
    let policy = Policy::new("fixed", 10, Duration::from_secs(60)).with_algorithm(Algorithm::FixedWindow);
    redis.clock().advance(Duration::from_secs(59));
    let mut passed = 0;
    for _ in 0..20 {
        passed += usize::from(limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed());
    }
    redis.clock().advance(Duration::from_secs(2));
    for _ in 0..20 {
        passed += usize::from(limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed());
    }
    // 20 requests within 2 seconds across the edge: 2 x limit within a minute.
    assert_eq!(passed, 20);
    // The second window reports its own end: 59 s from now.
    let Decision::Limited { retry_after, .. } = limiter.check("u", std::slice::from_ref(&policy)).await? else {
        panic!("the window is full");
    };
    assert_eq!(retry_after, Duration::from_secs(59));
    Ok(())
}

#[tokio::test]
async fn gcra_retry_after_is_exact() -> Result<()> {
    let (redis, limiter) = setup();
    let policy = Policy::new("exact", 10, Duration::from_secs(60)).with_burst(1);
    assert!(limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed());
    let Decision::Limited { retry_after, violated, .. } = limiter.check("u", std::slice::from_ref(&policy)).await?
    else {
        panic!("a second request inside 6 s must be limited");
    };
    assert_eq!((retry_after, violated), (Duration::from_secs(6), vec![std::borrow::Cow::Borrowed("exact")]));
    redis.clock().advance(retry_after - Duration::from_millis(1));
    assert!(!limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed());
    redis.clock().advance(Duration::from_millis(1));
    assert!(limiter.check("u", &[policy]).await?.is_allowed());
    Ok(())
}

#[tokio::test]
async fn a_request_refused_by_one_policy_is_charged_to_none() -> Result<()> {
    let (_, limiter) = setup();
    let tight = Policy::new("tight", 2, Duration::from_secs(60)).with_algorithm(Algorithm::FixedWindow);
    let loose = Policy::new("loose", 5, Duration::from_secs(60)).with_algorithm(Algorithm::SlidingLog);
    let both = [tight.clone(), loose.clone()];
    assert!(limiter.check("u", &both).await?.is_allowed());
    assert!(limiter.check("u", &both).await?.is_allowed());
    for _ in 0..3 {
        let decision = limiter.check("u", &both).await?;
        assert!(matches!(&decision, Decision::Limited { violated, .. } if violated == &vec!["tight"]), "{decision:?}");
    }
    let Decision::Allowed { remaining, .. } = limiter.peek("u", &[loose], 1).await? else { panic!("loose must allow") };
    assert_eq!(remaining, 2, "5 - 2 charged - 1 peeked: the 3 refused requests cost nothing");
    Ok(())
}

#[tokio::test]
async fn refund_penalize_block_and_reset() -> Result<()> {
    let (redis, limiter) = setup();
    let downloads = YOUTUBE_DOWNLOAD;
    for _ in 0..5 {
        assert!(limiter.check("u", std::slice::from_ref(&downloads)).await?.is_allowed());
    }
    assert!(!limiter.check("u", std::slice::from_ref(&downloads)).await?.is_allowed());
    limiter.refund("u", &downloads, 1).await?;
    assert!(limiter.check("u", std::slice::from_ref(&downloads)).await?.is_allowed());
    limiter.reset("u", Some(&downloads)).await?;
    limiter.penalize("u", &downloads, 5).await?;
    assert!(!limiter.check("u", std::slice::from_ref(&downloads)).await?.is_allowed());

    limiter.block("v", Duration::from_secs(30)).await?;
    let decision = limiter.check("v", &[API]).await?;
    assert!(
        matches!(decision, Decision::Limited { blocked: true, retry_after, .. } if retry_after == Duration::from_secs(30))
    );
    redis.clock().advance(Duration::from_secs(30));
    assert!(limiter.check("v", &[API]).await?.is_allowed());
    limiter.block("v", Duration::from_secs(30)).await?;
    limiter.reset("v", None).await?;
    assert!(limiter.check("v", &[API]).await?.is_allowed());
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason() -> Result<()> {
    let (_, limiter) = setup();
    let cannot = limiter.check_cost("u", &[MEDIA_REQUEST], 21).await;
    assert!(
        matches!(cannot, Err(Error::CannotFit { ref policy, cost: 21, capacity: 20 }) if policy == "media-request")
    );
    for bad in [
        Policy::new("zero", 0, Duration::from_secs(1)),
        Policy::new("instant", 1, Duration::ZERO),
        Policy::new("has space", 1, Duration::from_secs(1)),
        Policy::new("", 1, Duration::from_secs(1)),
    ] {
        assert!(matches!(limiter.check("u", &[bad]).await, Err(Error::InvalidInput(_))));
    }
    assert!(matches!(limiter.check("", &[API]).await, Err(Error::InvalidInput(_))));
    assert!(matches!(limiter.check("u", &[]).await, Err(Error::InvalidInput(_))));
    assert!(matches!(limiter.check_cost("u", &[API], 0).await, Err(Error::InvalidInput(_))));
    // Hash-tag and glob characters in a subject stay in that subject.
    assert!(limiter.check("a}b:*{c", &[API]).await?.is_allowed());
    Ok(())
}

#[tokio::test]
async fn every_key_has_a_ttl() -> Result<()> {
    let (redis, limiter) = setup();
    let policies = [
        Policy::new("g", 3, Duration::from_secs(60)),
        Policy::new("s", 3, Duration::from_secs(60)).with_algorithm(Algorithm::SlidingLog),
        Policy::new("f", 3, Duration::from_secs(60)).with_algorithm(Algorithm::FixedWindow),
    ];
    for subject in ["a", "b"] {
        for _ in 0..5 {
            limiter.check(subject, &policies).await?;
        }
        limiter.penalize(subject, &policies[0], 2).await?;
        limiter.refund(subject, &policies[2], 1).await?;
        limiter.block(subject, Duration::from_secs(5)).await?;
    }
    let page = redis.scan(Cursor::START, &Namespace::new("rl")?.pattern(Vec::<&str>::new()), 1_000).await?;
    assert_eq!(page.keys.len(), 8);
    for key in page.keys {
        assert!(redis.call(Cmd::new("PTTL").key(&key)).await?.as_int()? > 0, "{key} has no TTL");
    }
    Ok(())
}

#[tokio::test]
async fn long_refusals_are_answered_without_a_round_trip() -> Result<()> {
    let redis = MemoryBackend::new().auditing_script_keys();
    let limiter = RateLimiter::new(redis.clone(), Namespace::new("rl")?);
    let policy = Policy::new("slow", 1, Duration::from_secs(3_600));
    assert!(limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed());
    assert!(!limiter.check("u", std::slice::from_ref(&policy)).await?.is_allowed());
    // Even with the limiter's state gone from Redis, the cached refusal stands until its time.
    redis.call(Cmd::new("FLUSHALL")).await?;
    let cached = limiter.check("u", std::slice::from_ref(&policy)).await?;
    assert!(matches!(&cached, Decision::Limited { violated, .. } if violated == &vec!["slow"]), "{cached:?}");
    assert_eq!(limiter.stats().cached, 1);
    Ok(())
}

#[tokio::test]
async fn shadow_policies_count_but_never_refuse() -> Result<()> {
    let (_, limiter) = setup();
    let shadow = Policy::new("trial", 2, Duration::from_secs(60)).shadow();
    for _ in 0..5 {
        assert!(limiter.check("u", &[shadow.clone(), API]).await?.is_allowed());
    }
    assert_eq!(limiter.stats().shadow_would_limit, 3);
    let everything = limiter.clone().with_shadow(true);
    for _ in 0..3 {
        assert!(everything.check("w", &[Policy::new("one", 1, Duration::from_secs(60))]).await?.is_allowed());
    }
    assert_eq!(everything.stats().shadow_would_limit, 5);
    Ok(())
}

/// A GCRA burst of `limit` requests within one millisecond is admitted whole: with times near
/// 1.8e12 ms the arrival-time sums land a hair off their millisecond, and the burst's last
/// request used to be refused (seen on Valkey, whose checks are quick enough to share a
/// millisecond). The server's clock is frozen here, so every check shares one.
#[tokio::test]
async fn a_gcra_burst_within_one_millisecond_is_admitted_whole() -> Result<()> {
    let redis =
        MemoryBackend::with_clock(Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_585_219_168)))
            .auditing_script_keys();
    let limiter = RateLimiter::new(redis.clone(), Namespace::new("rl").unwrap_or_else(|e| panic!("{e}")))
        .with_refusal_cache(false);
    for (limit, period_ms) in [(3, 500), (7, 1_000), (100, 60_000), (3, 499)] {
        for start in 0..50u64 {
            redis.clock().advance(Duration::from_millis(start * 7 + 1));
            let policy =
                [Policy::new("burst", limit, Duration::from_millis(period_ms)).with_algorithm(Algorithm::Gcra)];
            let subject = format!("s-{limit}-{period_ms}-{start}");
            for i in 0..limit {
                let decision = limiter.check(&subject, &policy).await?;
                assert!(
                    decision.is_allowed(),
                    "{limit}/{period_ms} ms, start {start}: check {i} refused: {decision:?}"
                );
            }
            assert!(
                !limiter.check(&subject, &policy).await?.is_allowed(),
                "{limit}/{period_ms} ms: one past the burst"
            );
        }
    }
    Ok(())
}

/// A layer's policies are checked once, when it is built: a bad one is refused there, naming it.
#[test]
fn a_layer_refuses_bad_policies_when_built() {
    let limiter = RateLimiter::new(MemoryBackend::new(), Namespace::new("rl").unwrap_or_else(|e| panic!("{e}")));
    let key = redtail_ratelimit::SubjectKey;
    let forever = Policy::new("forever", 5, Duration::MAX);
    let refused = redtail_ratelimit::RateLimitLayer::new(limiter.clone(), [forever], key);
    assert!(
        matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("forever") && m.contains("period")),
        "{refused:?}"
    );
    let none: [Policy; 0] = [];
    let refused = redtail_ratelimit::RateLimitLayer::new(limiter.clone(), none, key);
    assert!(matches!(&refused, Err(Error::InvalidInput(m)) if m.contains("at least one policy")), "{refused:?}");
    assert!(redtail_ratelimit::RateLimitLayer::new(limiter, [API, MEDIA_REQUEST], key).is_ok());
}
