//! Group commit of sent messages on MySQL.
//!
//! Every sent message is a few writes (its row, the group's last chat time, the touched
//! sessions); committed one statement at a time, each is a round trip and an InnoDB log
//! flush. The writer task takes every message waiting when it is free and writes them all in
//! one transaction with multi-row statements (one `INSERT` per shard table and size, one
//! `UPDATE … IN (…)` for the sessions), so under load one flush and a handful of round trips
//! cover many messages. No message is answered before the transaction holding it committed.
//! Should a batch fail, its messages are written again one transaction each, so one bad
//! message fails alone.

use std::collections::{BTreeMap, HashSet};

use sqlx::mysql::MySqlPool;
use sqlx::MySqlConnection;
use teamtalk_core::store::{StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::sql::{chunks, row_chunks, shard, sized};
use super::{db, GROUP_INSERT, SINGLE_INSERT};

const TOUCH_SESSIONS: [&str; 4] = in_list!(
    "UPDATE IMRecentSession SET status = 0, updated = ? WHERE id IN ",
    ""
);
const EXISTING_SESSIONS: [&str; 4] = in_list!(
    "SELECT CAST(id AS SIGNED) FROM IMRecentSession WHERE id IN ",
    ""
);

/// The most messages in one transaction.
const MAX_BATCH: usize = 256;

/// A message row to insert.
#[derive(Debug)]
pub(super) enum MessageRow {
    /// `IMMessage_{relation % 8}`.
    Single {
        relation: u32,
        from: u32,
        to: u32,
        id: u32,
        content: String,
        msg_type: i32,
        created: u32,
    },
    /// `IMGroupMessage_{group % 8}`, and the group's `lastChated`.
    Group {
        group: u32,
        from: u32,
        id: u32,
        content: String,
        msg_type: i32,
        created: u32,
    },
}

impl MessageRow {
    /// The message id.
    pub(super) fn id(&self) -> u32 {
        match self {
            MessageRow::Single { id, .. } | MessageRow::Group { id, .. } => *id,
        }
    }

    fn shard_key(&self) -> (bool, u32) {
        match self {
            MessageRow::Single { relation, .. } => (false, relation % 8),
            MessageRow::Group { group, .. } => (true, group % 8),
        }
    }
}

/// Inserts `rows` with one multi-row statement per shard table and size, then moves each
/// group's last chat time to its newest message.
pub(super) async fn insert_rows(
    conn: &mut MySqlConnection,
    rows: &[&MessageRow],
) -> StoreResult<()> {
    let mut by_table: BTreeMap<(bool, u32), Vec<&MessageRow>> = BTreeMap::new();
    let mut chated: BTreeMap<u32, u32> = BTreeMap::new();
    for &row in rows {
        by_table.entry(row.shard_key()).or_default().push(row);
        if let MessageRow::Group { group, created, .. } = row {
            let last = chated.entry(*group).or_default();
            *last = (*last).max(*created);
        }
    }
    for ((group, shard_index), rows) in by_table {
        let statements = if group {
            shard(&GROUP_INSERT, shard_index)
        } else {
            shard(&SINGLE_INSERT, shard_index)
        };
        let mut rest = rows.as_slice();
        for (size_index, count) in row_chunks(rest.len()) {
            let (chunk, tail) = rest.split_at(count);
            rest = tail;
            let [s1, s8, s32] = statements;
            let sql = match size_index {
                0 => s1,
                1 => s8,
                _ => s32,
            };
            let mut query = sqlx::query(sql);
            for row in chunk {
                query = match row {
                    MessageRow::Single {
                        relation,
                        from,
                        to,
                        id,
                        content,
                        msg_type,
                        created,
                    } => query
                        .bind(relation)
                        .bind(from)
                        .bind(to)
                        .bind(id)
                        .bind(content.as_str())
                        .bind(msg_type)
                        .bind(created)
                        .bind(created),
                    MessageRow::Group {
                        group,
                        from,
                        id,
                        content,
                        msg_type,
                        created,
                    } => query
                        .bind(group)
                        .bind(from)
                        .bind(id)
                        .bind(content.as_str())
                        .bind(msg_type)
                        .bind(created)
                        .bind(created),
                };
            }
            query.execute(&mut *conn).await.map_err(db)?;
        }
    }
    for (group, created) in chated {
        sqlx::query("UPDATE IMGroup SET lastChated = ? WHERE id = ?")
            .bind(created)
            .bind(group)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// Makes the sessions `touches` (time, row id) visible at their time (the latest time when an
/// id comes more than once); returns the ids that matched no row (deleted behind our back).
async fn touch_sessions(
    conn: &mut MySqlConnection,
    touches: &[(u32, u32)],
) -> StoreResult<HashSet<u32>> {
    let mut latest: BTreeMap<u32, u32> = BTreeMap::new();
    for &(now, id) in touches {
        let at = latest.entry(id).or_default();
        *at = (*at).max(now);
    }
    let mut by_time: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (id, now) in latest {
        by_time.entry(now).or_default().push(id);
    }
    let mut vanished = HashSet::new();
    for (now, ids) in by_time {
        let mut matched = 0;
        for (index, padded) in chunks(&ids) {
            let mut query = sqlx::query(sized(&TOUCH_SESSIONS, index)).bind(now);
            for id in padded {
                query = query.bind(id);
            }
            // Matched rows (the connection sets CLIENT_FOUND_ROWS), each counted once.
            matched += query.execute(&mut *conn).await.map_err(db)?.rows_affected();
        }
        if matched < ids.len() as u64 {
            let mut found = HashSet::new();
            for (index, padded) in chunks(&ids) {
                let mut query = sqlx::query_scalar::<_, i64>(sized(&EXISTING_SESSIONS, index));
                for id in padded {
                    query = query.bind(id);
                }
                found.extend(query.fetch_all(&mut *conn).await.map_err(db)?);
            }
            vanished.extend(
                ids.iter()
                    .copied()
                    .filter(|&id| !found.contains(&i64::from(id))),
            );
        }
    }
    Ok(vanished)
}

/// One message to commit: its row and the session rows (by id) it makes visible again,
/// updated at `now`.
#[derive(Debug)]
pub(super) struct Record {
    /// The message.
    pub(super) row: MessageRow,
    /// `IMRecentSession.id`s to set `status = 0, updated = now`.
    pub(super) sessions: Vec<u32>,
    /// The sessions' new time.
    pub(super) now: u32,
}

struct Job {
    record: Record,
    reply: oneshot::Sender<StoreResult<Vec<u32>>>,
}

/// The handle: sends records to the writer task.
#[derive(Clone, Debug)]
pub(super) struct Writer {
    queue: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.record.fmt(f)
    }
}

impl Writer {
    /// Starts the writer task on `pool` (it stops when every handle is gone).
    pub(super) fn spawn(pool: MySqlPool) -> Writer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, jobs));
        Writer { queue }
    }

    /// Commits `record`; returns the session ids that matched no row.
    pub(super) async fn write(&self, record: Record) -> StoreResult<Vec<u32>> {
        let stopped = || StoreError::Inconsistent("the MySQL message writer has stopped".into());
        let (reply, done) = oneshot::channel();
        self.queue
            .send(Job { record, reply })
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

async fn run(pool: MySqlPool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(&pool, &batch).await {
            Ok(missing) => {
                for (job, missing) in batch.drain(..).zip(missing) {
                    let _ = job.reply.send(Ok(missing));
                }
            }
            Err(error) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(error));
                }
            }
            // The database is unreachable (pool timeout, I/O): every message fails now
            // instead of each waiting for a connection again.
            Err(error) if !statement_failed(&error) => {
                let message = error.to_string();
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::backend(std::io::Error::other(
                            message.clone(),
                        ))));
                }
            }
            Err(error) => {
                debug!(%error, messages = batch.len(), "batch failed; one at a time");
                for job in batch.drain(..) {
                    let result = commit(&pool, std::slice::from_ref(&job))
                        .await
                        .map(|mut missing| missing.pop().unwrap_or_default());
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// Whether `error` is a statement the database refused (one message may be at fault), as
/// opposed to the database being unreachable.
fn statement_failed(error: &StoreError) -> bool {
    match error {
        StoreError::Backend(source) => matches!(
            source.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(_))
        ),
        _ => false,
    }
}

/// Writes `jobs` in one transaction; per job, the session ids that matched no row.
async fn commit(pool: &MySqlPool, jobs: &[Job]) -> StoreResult<Vec<Vec<u32>>> {
    let mut tx = pool.begin().await.map_err(db)?;
    let rows: Vec<&MessageRow> = jobs.iter().map(|job| &job.record.row).collect();
    insert_rows(&mut tx, &rows).await?;
    let mut touches = Vec::new();
    for job in jobs {
        touches.extend(job.record.sessions.iter().map(|&id| (job.record.now, id)));
    }
    let vanished = touch_sessions(&mut tx, &touches).await?;
    tx.commit().await.map_err(db)?;
    Ok(jobs
        .iter()
        .map(|job| {
            job.record
                .sessions
                .iter()
                .copied()
                .filter(|id| vanished.contains(id))
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refused_statements_are_retried_one_by_one() {
        assert!(!statement_failed(&StoreError::backend(
            sqlx::Error::PoolTimedOut
        )));
        assert!(!statement_failed(&StoreError::backend(sqlx::Error::Io(
            std::io::Error::other("connection reset")
        ))));
        assert!(!statement_failed(&StoreError::Inconsistent("x".into())));
    }
}
