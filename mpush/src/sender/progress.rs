//! Broadcast task progress and control, read from and written to the shared cache (§9.6):
//! `mp:pt<taskId>` holds `q` (QPS), `c` (cancel flag) and `sc` (sent count); `<taskId>:sui`
//! lists the users reached.

use super::PushSender;
use crate::protocol::keys::{task_key, task_success_key};
use crate::spi::SpiResult;

/// What a broadcast task has done so far, summed over every server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskProgress {
    /// Pushes written (`sc`).
    pub sent: u64,
    /// Configured QPS (`q`), if set.
    pub qps: Option<u64>,
    /// `true` once cancelled (`c` = 1).
    pub cancelled: bool,
}

impl PushSender {
    /// Reads a broadcast task's progress.
    pub async fn task_progress(&self, task_id: &str) -> SpiResult<TaskProgress> {
        let h = self
            .inner
            .remote
            .cache()
            .hgetall(&task_key(task_id))
            .await?;
        let num = |k: &str| h.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        Ok(TaskProgress {
            sent: num("sc").unwrap_or(0),
            qps: num("q"),
            cancelled: num("c") == Some(1),
        })
    }

    /// The users a broadcast task reached (most recent first; may repeat across batches).
    pub async fn task_users(&self, task_id: &str) -> SpiResult<Vec<String>> {
        self.inner
            .remote
            .cache()
            .lrange(&task_success_key(task_id), 0, -1)
            .await
    }

    /// Sets a task's QPS before or while it runs (servers re-read it when a window is full).
    pub async fn set_task_qps(&self, task_id: &str, qps: u64) -> SpiResult<()> {
        self.inner
            .remote
            .cache()
            .hset(&task_key(task_id), "q", &qps.to_string())
            .await
    }

    /// Cancels a running task: servers stop at their next flow-control check.
    pub async fn cancel_task(&self, task_id: &str) -> SpiResult<()> {
        self.inner
            .remote
            .cache()
            .hset(&task_key(task_id), "c", "1")
            .await
    }
}
