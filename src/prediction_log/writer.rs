//! The background writer of the local server: `/predict` queues its line and answers at once;
//! one task stores what has queued up, a batch per write, and acknowledges flushes once
//! everything queued before them is written (or has failed).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{LogLine, LogStore};

/// Lines waiting to be written; beyond this a line is dropped and counted as a failure rather
/// than holding memory (or a request) hostage to a slow store.
pub const QUEUE_CAPACITY: usize = 10_000;
/// The most lines stored by one write.
pub const MAX_BATCH: usize = 1_000;

enum Command {
    Line(LogLine),
    Flush(oneshot::Sender<()>),
}

/// The queue into the writer task.
pub(super) struct Writer {
    queue: mpsc::Sender<Command>,
}

impl Writer {
    /// Starts the writer task on the current Tokio runtime.
    pub(super) fn spawn(
        store: Arc<dyn LogStore>,
        timeout: Duration,
        failures: Arc<AtomicU64>,
    ) -> Self {
        let (queue, commands) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(commands, store, timeout, failures));
        Writer { queue }
    }

    /// Queues a line without waiting; a full or closed queue hands the line back.
    pub(super) fn push(&self, line: LogLine) -> Result<(), &'static str> {
        self.queue
            .try_send(Command::Line(line))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "the write queue is full",
                mpsc::error::TrySendError::Closed(_) => "the writer has stopped",
            })
    }

    /// Waits until every line queued before this call is written or has failed.
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(
    mut commands: mpsc::Receiver<Command>,
    store: Arc<dyn LogStore>,
    timeout: Duration,
    failures: Arc<AtomicU64>,
) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = commands.recv().await {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Line(line) => batch.push(line),
                Command::Flush(done) => flushes.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = commands.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            batch.sort_by_key(|line| line.timestamp);
            super::store_with_timeout(store.as_ref(), &batch, timeout, &failures).await;
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
