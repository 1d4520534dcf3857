//! What the admin reads and changes, with the job and session data types erased: one trait
//! object per queue and one for the session store.

use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use redtail_queue::{GroupInfo, JobInfo, JobState, Metrics, Queue, SchedulerInfo};
use redtail_session::{Codec, SessionStore};
use serde::{Serialize, de::DeserializeOwned};

/// A queue, whatever its job type.
#[async_trait]
pub(crate) trait QueueSource: Send + Sync {
    fn name(&self) -> &str;
    async fn metrics(&self, minutes: u32) -> redtail_queue::Result<Metrics>;
    async fn schedulers(&self) -> redtail_queue::Result<Vec<SchedulerInfo>>;
    async fn list(&self, state: JobState, offset: u64, count: u64) -> redtail_queue::Result<Vec<JobInfo>>;
    async fn get(&self, id: &str) -> redtail_queue::Result<Option<JobInfo>>;
    async fn logs(&self, id: &str) -> redtail_queue::Result<Vec<String>>;
    async fn act(&self, action: JobAction, id: &str) -> redtail_queue::Result<bool>;
    async fn pause(&self, paused: bool) -> redtail_queue::Result<()>;
    async fn groups(&self, after: Option<&str>, count: usize) -> redtail_queue::Result<Vec<GroupInfo>>;
    async fn group(&self, group: &str) -> redtail_queue::Result<GroupInfo>;
    async fn pause_group(&self, group: &str, paused: bool) -> redtail_queue::Result<()>;
}

/// What an operator can do to one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobAction {
    Retry,
    Promote,
    Delete,
}

#[async_trait]
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> QueueSource for Queue<T> {
    fn name(&self) -> &str {
        &self.config().name
    }
    async fn metrics(&self, minutes: u32) -> redtail_queue::Result<Metrics> {
        Queue::metrics(self, minutes).await
    }
    async fn schedulers(&self) -> redtail_queue::Result<Vec<SchedulerInfo>> {
        Queue::schedulers(self).await
    }
    async fn list(&self, state: JobState, offset: u64, count: u64) -> redtail_queue::Result<Vec<JobInfo>> {
        Queue::list(self, state, offset, count).await
    }
    async fn get(&self, id: &str) -> redtail_queue::Result<Option<JobInfo>> {
        Queue::get(self, id).await
    }
    async fn logs(&self, id: &str) -> redtail_queue::Result<Vec<String>> {
        Queue::logs(self, id).await
    }
    async fn act(&self, action: JobAction, id: &str) -> redtail_queue::Result<bool> {
        match action {
            JobAction::Retry => self.retry_dead(id).await,
            JobAction::Promote => self.promote(id).await,
            JobAction::Delete => self.delete(id).await,
        }
    }
    async fn pause(&self, paused: bool) -> redtail_queue::Result<()> {
        if paused { Queue::pause(self).await } else { self.resume().await }
    }
    async fn groups(&self, after: Option<&str>, count: usize) -> redtail_queue::Result<Vec<GroupInfo>> {
        Queue::groups(self, after, count).await
    }
    async fn group(&self, group: &str) -> redtail_queue::Result<GroupInfo> {
        Queue::group(self, group).await
    }
    async fn pause_group(&self, group: &str, paused: bool) -> redtail_queue::Result<()> {
        if paused { Queue::pause_group(self, group).await } else { self.resume_group(group).await }
    }
}

/// A session as the admin shows it: its id and times, never its token or data.
#[derive(Debug, Serialize)]
pub(crate) struct SessionView {
    id: String,
    created_ms: u64,
    last_seen_ms: u64,
    expires_ms: u64,
    remember_me: bool,
    ip: Option<String>,
    user_agent: Option<String>,
}

/// The session store, whatever its data type and codec.
#[async_trait]
pub(crate) trait SessionSource: Send + Sync {
    async fn list(&self, user: &str) -> redtail_session::Result<Vec<SessionView>>;
    async fn end(&self, user: &str, id: &str) -> redtail_session::Result<bool>;
}

#[async_trait]
impl<T, C> SessionSource for SessionStore<T, C>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec + Send + Sync + 'static,
{
    async fn list(&self, user: &str) -> redtail_session::Result<Vec<SessionView>> {
        let ms = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Ok(SessionStore::list(self, user)
            .await?
            .into_iter()
            .map(|s| SessionView {
                id: s.id,
                created_ms: ms(s.created_at),
                last_seen_ms: ms(s.last_seen),
                expires_ms: ms(s.expires_at),
                remember_me: s.remember_me,
                ip: s.device.as_ref().and_then(|d| d.ip.clone()),
                user_agent: s.device.and_then(|d| d.user_agent),
            })
            .collect())
    }
    async fn end(&self, user: &str, id: &str) -> redtail_session::Result<bool> {
        SessionStore::end(self, user, id).await
    }
}
