//! Redis ACLs: a service running as a user allowed only its own keys works, and cannot reach
//! anybody else's.

use std::{sync::Arc, time::Duration};

use redtail_connection::{Config, Redis};
use redtail_core::{Backend, Cmd, Error, Key};
use redtail_queue::{Queue, QueueConfig, WorkerOptions};
use redtail_tests::{Deployment, TestRedis, TestResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_service_user_reaches_only_its_own_keys() -> TestResult {
    let servers = TestRedis::owned(Deployment::Standalone)?;
    let port = servers.data_ports()[0];
    // The queue's keys only, every command but the dangerous ones.
    servers.admin(
        port,
        &[
            "ACL",
            "SETUSER",
            "downloads-svc",
            "reset",
            "on",
            ">s3cret-pw",
            "~rt:q:{downloads}:*",
            "+@all",
            "-@dangerous",
        ],
    )?;
    servers.admin(port, &["SET", "rt:sess:{other}:s:victim", "someone else's session"])?;

    let url = format!("redis://downloads-svc:s3cret-pw@127.0.0.1:{port}");
    let backend: Arc<dyn Backend> =
        Arc::new(Redis::connect(Config::from_url(&url)?.with_command_timeout(Duration::from_secs(2))).await?);
    let queue = Queue::<String>::new(Arc::clone(&backend), QueueConfig::new("downloads"))?;
    let ids = queue.add_bulk(&["a".to_owned(), "b".to_owned(), "c".to_owned()]).await?;
    let worker = queue.worker(WorkerOptions::default().idle_poll(Duration::from_millis(50)), |job| async move {
        Ok::<_, String>(job.data.len())
    });
    let started = std::time::Instant::now();
    while queue.counts().await?.completed < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "the queue works within its ACL");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    worker.shutdown().await;
    assert_eq!(queue.get(ids[0].as_str()).await?.and_then(|j| j.result), Some(serde_json::json!(1)));

    // Anybody else's keys are out of reach, for reads and writes.
    let victim = Key::from_raw("rt:sess:{other}:s:victim");
    for cmd in [Cmd::new("GET").key(&victim), Cmd::new("DEL").key(&victim)] {
        let refused = backend.call(cmd).await;
        assert!(matches!(&refused, Err(Error::Server(e)) if e.message().contains("NOPERM")), "{refused:?}");
    }
    let kept = redtail_testkit::resp::command(port, &["GET", "rt:sess:{other}:s:victim"])?;
    assert_eq!(kept.text().as_deref(), Some("someone else's session"));
    Ok(())
}
