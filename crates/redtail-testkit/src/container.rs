//! The container fallback: a Redis container through testcontainers when no `redis-server` is
//! installed and a Docker engine answers.

use std::process::Command;

use testcontainers::{
    GenericImage, ImageExt,
    core::{IntoContainerPort, WaitFor},
    runners::SyncRunner,
};

use crate::{Error, Result, TestRedis};

/// Whether the server binary in use ([`ServerBinaries`](crate::ServerBinaries)) can be run.
pub(crate) fn redis_server_installed() -> bool {
    Command::new(&crate::ServerBinaries::current().server).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A standalone Redis in a container.
pub(crate) fn standalone() -> Result<TestRedis> {
    // The sync runner drives its own Tokio runtime, which cannot start inside a test's runtime:
    // start it on a thread of its own.
    let started = std::thread::spawn(|| {
        GenericImage::new("redis", "7.0")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_cmd(["redis-server", "--save", "", "--appendonly", "no"])
            .start()
    })
    .join()
    .map_err(|_| Error::Unexpected("the container thread panicked".to_owned()))?;
    let container = started.map_err(|e| {
        tracing::warn!(error = %e, "no Docker engine for the testcontainers fallback");
        Error::not_installed("REDIS_URL")
    })?;
    let port =
        container.get_host_port_ipv4(6379.tcp()).map_err(|e| Error::Unexpected(format!("container port: {e}")))?;
    Ok(TestRedis::from_container(format!("redis://127.0.0.1:{port}"), Box::new(container)))
}
