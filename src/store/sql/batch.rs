//! Group commit: first sign-ins that arrive together are written in one transaction.
//!
//! A commit has a fixed price however little it writes: SQLite takes its locks and appends to
//! its journal, PostgreSQL flushes its log to disk. Paid once per new user, that price caps how
//! fast a crowd can sign in for the first time (Monday 9:00, after a migration). Creations are
//! therefore queued to one writer task per store, which takes whatever is waiting, up to a
//! limit, and writes it in one statement and one commit. Alone, a creation is written at once:
//! batching costs a lone user nothing but the hand-over to the writer.
//!
//! The writer runs each batch to the end whether or not its callers are still waiting, so a
//! cancelled request never leaves a transaction half done; a caller that went away simply
//! does not hear the result.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::rows::SqlRow;
use crate::audit::{Audit, AuditEvent};
use crate::store::{ChangeFeed, Resolved, StoreError, StoreEvent};
use crate::user::{Identity, IdentityKey, NewUser, User};

type Job<J, R> = (J, oneshot::Sender<R>);
type Run<J, R> = Arc<dyn Fn(Vec<J>) -> BoxFuture<'static, Vec<R>> + Send + Sync>;

/// A queue of jobs written in batches by one writer task.
pub(crate) struct GroupCommit<J, R> {
    /// The writer's inbox; `None` until the first job, replaced if the writer went away (its
    /// runtime shut down while the store lives on).
    inbox: Mutex<Option<mpsc::UnboundedSender<Job<J, R>>>>,
    run: Run<J, R>,
    max_batch: usize,
}

/// The writer stopped before answering (it panicked, or its runtime shut down).
#[derive(Debug)]
pub(crate) struct WriterGone;

impl<J: Send + 'static, R: Send + 'static> GroupCommit<J, R> {
    /// Batches of at most `max_batch` jobs, each written by `run`, which answers every job of
    /// a batch, in order.
    pub(crate) fn new<F, Fut>(max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        Self {
            inbox: Mutex::new(None),
            run: Arc::new(move |jobs| Box::pin(run(jobs))),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues `job` and waits for its result.
    pub(crate) async fn submit(&self, job: J) -> Result<R, WriterGone> {
        let (reply, answer) = oneshot::channel();
        let mut pending = (job, reply);
        // A closed inbox means the writer's runtime is gone: start another on this one.
        for _ in 0..2 {
            let inbox = self.inbox();
            match inbox.send(pending) {
                Ok(()) => return answer.await.map_err(|_| WriterGone),
                Err(mpsc::error::SendError(returned)) => {
                    pending = returned;
                    self.inbox
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take_if(|current| current.same_channel(&inbox));
                }
            }
        }
        Err(WriterGone)
    }

    fn inbox(&self) -> mpsc::UnboundedSender<Job<J, R>> {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        inbox
            .get_or_insert_with(|| {
                let (sender, receiver) = mpsc::unbounded_channel();
                tokio::spawn(write(receiver, Arc::clone(&self.run), self.max_batch));
                sender
            })
            .clone()
    }
}

/// The writer: takes what is queued, writes it, answers, until every store clone is gone.
async fn write<J, R>(mut inbox: mpsc::UnboundedReceiver<Job<J, R>>, run: Run<J, R>, max: usize) {
    let mut queued = Vec::with_capacity(max);
    while inbox.recv_many(&mut queued, max).await > 0 {
        let (jobs, replies): (Vec<J>, Vec<oneshot::Sender<R>>) = queued.drain(..).unzip();
        let results = run(jobs).await;
        debug_assert_eq!(results.len(), replies.len(), "one result per job");
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away; the write stands all the same.
            let _ = reply.send(result);
        }
    }
}

/// One first sign-in waiting to be written.
pub(crate) struct Creation {
    pub(crate) user: User,
    pub(crate) key: IdentityKey,
    pub(crate) fingerprint: Option<String>,
    pub(crate) event: AuditEvent,
}

/// What became of a creation that the database did not refuse as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// The user and the identity are new.
    Written,
    /// The identity belongs to a user (perhaps one created a moment ago elsewhere).
    Taken,
    /// The identity belonged to a deleted user.
    Deleted,
    /// A unique value of the new user is someone else's.
    Duplicate(&'static str),
}

impl Created {
    /// The outcome a backend's batch reports for one creation, as five flags: `written` (the
    /// user and identity went in), `tombstoned`, `taken` (the identity belongs to a user),
    /// `user_name_taken` and `external_id_taken`.
    pub(crate) fn from_flags(row: &impl SqlRow) -> Result<Self, StoreError> {
        Ok(if row.flag("written")? {
            Self::Written
        } else if row.flag("tombstoned")? {
            Self::Deleted
        } else if row.flag("taken")? {
            Self::Taken
        } else if row.flag("user_name_taken")? {
            Self::Duplicate("user_name")
        } else if row.flag("external_id_taken")? {
            Self::Duplicate("external_id")
        } else {
            // Claimed by a concurrent transaction after the statement's snapshot.
            Self::Taken
        })
    }
}

/// A creation handed back with its outcome.
pub(crate) type CreationResult = (Creation, Result<Created, StoreError>);

/// The group commit of a store's first sign-ins.
pub(crate) type Creations = GroupCommit<Creation, CreationResult>;

impl Creation {
    /// The user `create_user` was asked for, signed in now, with its audit event.
    pub(crate) fn new(
        user: NewUser,
        key: &IdentityKey,
        fingerprint: Option<&str>,
        audit: AuditEvent,
    ) -> Self {
        let now = crate::user::now();
        let mut user = User::from_new(user, now);
        user.last_login_at = Some(now);
        Self {
            event: audit.identity(key).user(user.id),
            user,
            key: key.clone(),
            fingerprint: fingerprint.map(str::to_owned),
        }
    }

    /// Submits this creation to `creations` and turns the outcome into `create_user`'s answer;
    /// `owner` reads the user an identity turned out to belong to.
    pub(crate) async fn create<F>(
        self,
        creations: &Creations,
        owner: impl FnOnce(IdentityKey) -> F,
    ) -> Result<Resolved, StoreError>
    where
        F: Future<Output = Result<Resolved, StoreError>>,
    {
        let (job, created) = creations
            .submit(self)
            .await
            .map_err(|WriterGone| StoreError::Backend("the store's writer stopped".into()))?;
        match created? {
            Created::Written => Ok(Resolved {
                identity: Identity {
                    key: job.key,
                    user_id: job.user.id,
                    created_at: job.user.created_at,
                    last_login_at: job.user.last_login_at,
                    claims_fingerprint: job.fingerprint,
                },
                user: job.user,
                written: true,
            }),
            Created::Taken => owner(job.key).await,
            Created::Deleted => Err(StoreError::IdentityDeleted),
            Created::Duplicate(column) => Err(StoreError::Duplicate(column)),
        }
    }
}

/// Emits the audit event and publishes the change of every creation that was written, once
/// the batch has committed.
pub(crate) fn announce(
    jobs: Vec<Creation>,
    results: Vec<Result<Created, StoreError>>,
    audit: &Audit,
    feed: &ChangeFeed,
) -> Vec<CreationResult> {
    for (job, result) in jobs.iter().zip(&results) {
        if matches!(result, Ok(Created::Written)) {
            audit.emit(&job.event);
            feed.publish(StoreEvent::Changed {
                user_id: job.user.id,
                version: job.user.version,
            });
        }
    }
    jobs.into_iter().zip(results).collect()
}

impl<J, R> std::fmt::Debug for GroupCommit<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_waiting_together_are_written_together_and_each_answered() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&batches);
        let commit = Arc::new(GroupCommit::new(8, move |jobs: Vec<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                // Slow enough that the others queue up behind the first batch.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                seen.lock().unwrap().push(jobs.len());
                jobs.into_iter().map(|job| job * 10).collect::<Vec<_>>()
            }
        }));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let commit = Arc::clone(&commit);
                tokio::spawn(async move { (i, commit.submit(i).await.unwrap()) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            assert_eq!(answer, i * 10, "each job gets its own answer");
        }
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        assert!(
            batches.iter().all(|&n| n <= 8),
            "batches respect the limit: {batches:?}"
        );
        assert!(
            batches.len() < 20,
            "jobs waiting together share a batch: {batches:?}"
        );
    }

    #[test]
    fn a_writer_whose_runtime_ended_is_replaced() {
        let commit = GroupCommit::new(4, |jobs: Vec<u8>| async move { jobs });
        for round in 0..3u8 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            assert_eq!(runtime.block_on(commit.submit(round)).unwrap(), round);
        }
    }
}
