//! Group commit: every write of the SQLite store goes through one writer task, which drains
//! all pending writes and applies them in one transaction.
//!
//! Callers await each write before issuing their next one, so the writes pending in one batch
//! all overlap in time and any order of applying them is a valid linearization. The hot writes
//! of sending a message (appends, unread counters, group counters, catch-ups, sessions) are
//! therefore grouped by kind and applied as one set-based statement per kind, with the batch's
//! rows bound as a single JSON array. Everything else runs one statement at a time inside the
//! same transaction. A reply is sent only after the commit. When anything in a batch fails,
//! the batch is rolled back and every write is retried alone, so one bad write cannot fail its
//! neighbours.

use std::collections::HashMap;
use std::fmt::Write as _;

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Row};
use teamtalk_core::domain::{ClientType, GroupId, RelationId, Timestamp, UserId};
use teamtalk_core::store::{
    login_name_key, Credentials, NewDepartment, NewGroup, NewMessage, NewUser, OfflineFile, Peer,
    ProfileChange, StoreError, StoreResult,
};
use tokio::sync::{mpsc, oneshot};

use super::{db, id_array};

/// Writes taken from the queue per transaction at most.
const MAX_BATCH: usize = 1024;

/// One write.
#[derive(Debug)]
pub(super) enum Write {
    SetSignInfo {
        user: UserId,
        sign_info: String,
        now: Timestamp,
    },
    SetPushShield {
        user: UserId,
        shield: bool,
        now: Timestamp,
    },
    SetCredentials {
        user: UserId,
        credentials: Credentials,
        now: Timestamp,
    },
    SetStatus {
        user: UserId,
        status: u32,
        now: Timestamp,
    },
    UpdateProfile {
        user: UserId,
        change: Box<ProfileChange>,
        now: Timestamp,
    },
    AddUser {
        user: Box<NewUser>,
        now: Timestamp,
    },
    AddDepartment {
        department: NewDepartment,
        now: Timestamp,
    },
    CreateRelation {
        small: UserId,
        big: UserId,
        now: Timestamp,
    },
    TouchSession {
        owner: UserId,
        peer: Peer,
        now: Timestamp,
    },
    RemoveSession {
        owner: UserId,
        peer: Peer,
        now: Timestamp,
    },
    RemoveGroupSessions {
        group: GroupId,
        users: Vec<UserId>,
        now: Timestamp,
    },
    RefreshGroupSessions {
        group: GroupId,
        members: Vec<UserId>,
        last_chated: Timestamp,
        now: Timestamp,
    },
    AppendSingle {
        relation: RelationId,
        to: UserId,
        message: NewMessage,
    },
    AppendGroup {
        group: GroupId,
        message: NewMessage,
    },
    /// Append + receiver's unread + both sessions (`RecordMessage::record_single`).
    RecordSingle {
        relation: RelationId,
        to: UserId,
        message: NewMessage,
        now: Timestamp,
    },
    /// Append + group count + sender's catch-up + session (`RecordMessage::record_group`).
    RecordGroup {
        group: GroupId,
        message: NewMessage,
        now: Timestamp,
    },
    AddUnread {
        owner: UserId,
        peer: UserId,
    },
    ClearUnread {
        owner: UserId,
        peer: UserId,
    },
    AddGroupMessage {
        group: GroupId,
    },
    CatchUp {
        user: UserId,
        group: GroupId,
    },
    CreateGroup {
        group: Box<NewGroup>,
        now: Timestamp,
    },
    AddMembers {
        group: GroupId,
        users: Vec<UserId>,
        now: Timestamp,
    },
    RemoveMembers {
        group: GroupId,
        users: Vec<UserId>,
    },
    SetDeviceToken {
        user: UserId,
        client_type: Option<ClientType>,
        token: String,
    },
    SetGroupShield {
        group: GroupId,
        user: UserId,
        shielded: bool,
    },
    AddOfflineFile {
        file: OfflineFile,
    },
    RemoveOfflineFile {
        from: UserId,
        to: UserId,
        task_id: String,
    },
}

/// What a write reports.
#[derive(Debug)]
pub(super) enum Done {
    Unit,
    Changed(bool),
    Id(u32),
    Users(Vec<UserId>),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<StoreResult<Done>>,
}

/// The handle the store keeps: sends writes to the writer task.
#[derive(Clone, Debug)]
pub(super) struct Writer {
    queue: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer task on `connection`.
    pub(super) fn spawn(connection: SqliteConnection) -> Writer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(connection, jobs));
        Writer { queue }
    }

    /// Applies `write` and waits for its commit.
    pub(super) async fn write(&self, write: Write) -> StoreResult<Done> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send(Job { write, reply })
            .map_err(|_| StoreError::Inconsistent("the SQLite writer has stopped".into()))?;
        done.await
            .map_err(|_| StoreError::Inconsistent("the SQLite writer has stopped".into()))?
    }
}

/// The last message id (and, for groups, last chat time) of each conversation as committed.
/// The writer is the only writer of the database, so once read these stay exact; they are
/// updated only after a commit and forgotten when a batch fails.
#[derive(Debug, Default)]
struct LastIds {
    relations: HashMap<u32, u32>,
    groups: HashMap<u32, (u32, u32)>,
}

impl LastIds {
    /// Conversations remembered at most (then the memory is simply cleared).
    const MAX: usize = 1_000_000;

    fn merge(&mut self, committed: LastIds) {
        if self.relations.len() + self.groups.len() > Self::MAX {
            *self = LastIds::default();
        }
        self.relations.extend(committed.relations);
        self.groups.extend(committed.groups);
    }
}

/// The writer task: batches until every handle is dropped, then closes the connection.
async fn run(mut connection: SqliteConnection, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::new();
    let mut committed = LastIds::default();
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match apply_batch(&mut connection, &batch, &committed).await {
            Ok((results, last_ids)) => {
                committed.merge(last_ids);
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(_) => {
                // Isolate the failure: every write alone, in its own transaction.
                committed = LastIds::default();
                for job in batch.drain(..) {
                    let result = match apply_alone(&mut connection, &job.write, &committed).await {
                        Ok((done, last_ids)) => {
                            committed.merge(last_ids);
                            Ok(done)
                        }
                        Err(error) => Err(error),
                    };
                    let _ = job.reply.send(result);
                }
            }
        }
    }
    let _ = connection.close().await;
}

async fn apply_alone(
    connection: &mut SqliteConnection,
    write: &Write,
    committed: &LastIds,
) -> StoreResult<(Done, LastIds)> {
    let mut tx = connection.begin().await.map_err(db)?;
    let (done, last_ids) = if is_append(write) {
        let (mut results, last_ids) = append(&mut tx, &[write], committed).await?;
        let done = results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Inconsistent("no append result".into())))?;
        bookkeeping(&mut tx, &[write]).await?;
        (done, last_ids)
    } else {
        (apply_one(&mut tx, write).await?, LastIds::default())
    };
    tx.commit().await.map_err(db)?;
    Ok((done, last_ids))
}

/// Applies a whole batch in one transaction: grouped writes as one statement per kind, then
/// the rest one by one. `Err` means nothing was committed.
async fn apply_batch(
    connection: &mut SqliteConnection,
    batch: &[Job],
    committed: &LastIds,
) -> StoreResult<(Vec<StoreResult<Done>>, LastIds)> {
    let mut tx = connection.begin().await.map_err(db)?;
    let writes: Vec<&Write> = batch.iter().map(|job| &job.write).collect();
    let appends: Vec<&Write> = writes.iter().copied().filter(|w| is_append(w)).collect();
    let (appended, last_ids) = append(&mut tx, &appends, committed).await?;
    let mut appended = appended.into_iter();

    // Appends are answered here; everything else, and the bookkeeping of the records that were
    // stored, below.
    let mut results: Vec<Option<StoreResult<Done>>> = Vec::with_capacity(writes.len());
    let mut rest: Vec<&Write> = Vec::with_capacity(writes.len());
    for &write in &writes {
        if is_append(write) {
            let result = appended
                .next()
                .unwrap_or_else(|| Err(StoreError::Inconsistent("missing append result".into())));
            if result.is_ok() {
                rest.push(write);
            }
            results.push(Some(result));
        } else {
            rest.push(write);
            results.push(None);
        }
    }
    bookkeeping(&mut tx, &rest).await?;

    let mut done = Vec::with_capacity(writes.len());
    for (write, result) in writes.into_iter().zip(results) {
        done.push(match result {
            Some(result) => result,
            None if is_grouped(write) => Ok(Done::Unit),
            None => Ok(apply_one(&mut tx, write).await?),
        });
    }
    tx.commit().await.map_err(db)?;
    Ok((done, last_ids))
}

/// The counters and sessions of `writes` (each helper picks its own kinds), in the order the
/// effects depend on: group counts before catch-ups.
async fn bookkeeping(tx: &mut SqliteConnection, writes: &[&Write]) -> StoreResult<()> {
    add_group_messages(tx, writes.iter().copied()).await?;
    catch_up(tx, writes.iter().copied()).await?;
    add_unread(tx, writes.iter().copied()).await?;
    touch_sessions(tx, writes.iter().copied()).await
}

/// Writes applied entirely by the grouped statements of [`bookkeeping`].
fn is_grouped(write: &Write) -> bool {
    matches!(
        write,
        Write::AddGroupMessage { .. }
            | Write::CatchUp { .. }
            | Write::AddUnread { .. }
            | Write::TouchSession { .. }
    )
}

fn is_append(write: &Write) -> bool {
    matches!(
        write,
        Write::AppendSingle { .. }
            | Write::AppendGroup { .. }
            | Write::RecordSingle { .. }
            | Write::RecordGroup { .. }
    )
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Appends single and group messages: reads each conversation's last id once, numbers the
/// batch's messages in order, inserts them with one statement per table and stores the new
/// last ids. One result per write, in order (a write for an unknown conversation fails alone).
async fn append(
    tx: &mut SqliteConnection,
    writes: &[&Write],
    committed: &LastIds,
) -> StoreResult<(Vec<StoreResult<Done>>, LastIds)> {
    // Last id (and last chat time) of each conversation; `None` until found in the database.
    let mut relations: HashMap<u32, Option<u32>> = HashMap::new();
    let mut groups: HashMap<u32, Option<(u32, u32)>> = HashMap::new();
    for write in writes {
        match write {
            Write::AppendSingle { relation, .. } | Write::RecordSingle { relation, .. } => {
                relations.insert(relation.0, committed.relations.get(&relation.0).copied());
            }
            Write::AppendGroup { group, .. } | Write::RecordGroup { group, .. } => {
                groups.insert(group.0, committed.groups.get(&group.0).copied());
            }
            _ => {}
        }
    }
    let unknown = |ids: Vec<u32>| (!ids.is_empty()).then(|| id_array(ids));
    if let Some(ids) = unknown(
        relations
            .iter()
            .filter(|(_, l)| l.is_none())
            .map(|(id, _)| *id)
            .collect(),
    ) {
        let rows = sqlx::query(
            "SELECT id, last_msg_id FROM relations WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in rows {
            relations.insert(
                row.try_get("id").map_err(db)?,
                Some(row.try_get("last_msg_id").map_err(db)?),
            );
        }
    }
    if let Some(ids) = unknown(
        groups
            .iter()
            .filter(|(_, l)| l.is_none())
            .map(|(id, _)| *id)
            .collect(),
    ) {
        let rows = sqlx::query("SELECT id, last_msg_id, last_chated FROM groups WHERE id IN (SELECT value FROM json_each(?))")            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        for row in rows {
            let last = (
                row.try_get("last_msg_id").map_err(db)?,
                row.try_get("last_chated").map_err(db)?,
            );
            groups.insert(row.try_get("id").map_err(db)?, Some(last));
        }
    }

    let mut single_rows = String::from("[");
    let mut group_rows = String::from("[");
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        match write {
            Write::AppendSingle {
                relation,
                to,
                message,
            }
            | Write::RecordSingle {
                relation,
                to,
                message,
                ..
            } => match relations.get_mut(&relation.0) {
                Some(Some(last)) => {
                    *last += 1;
                    push_row(
                        &mut single_rows,
                        &[relation.0, *last, message.from.0, to.0],
                        message,
                    );
                    results.push(Ok(Done::Id(*last)));
                }
                _ => results.push(Err(StoreError::Inconsistent(format!(
                    "no relation {}",
                    relation.0
                )))),
            },
            Write::AppendGroup { group, message } | Write::RecordGroup { group, message, .. } => {
                match groups.get_mut(&group.0) {
                    Some(Some((last, chated))) => {
                        *last += 1;
                        *chated = message.created.0;
                        push_row(&mut group_rows, &[group.0, *last, message.from.0], message);
                        results.push(Ok(Done::Id(*last)));
                    }
                    _ => results.push(Err(StoreError::Inconsistent(format!(
                        "no group {}",
                        group.0
                    )))),
                }
            }
            _ => results.push(Err(StoreError::Inconsistent("not an append".into()))),
        }
    }
    single_rows.push(']');
    group_rows.push(']');
    if single_rows.len() > 2 {
        sqlx::query(
            "INSERT INTO messages (relation, msg_id, from_id, to_id, type, content, created) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, unhex(value->>5), value->>6 \
             FROM json_each(?)",
        )
        .bind(single_rows)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let last_ids: Vec<[u32; 2]> = relations
            .iter()
            .filter_map(|(id, last)| last.map(|last| [*id, last]))
            .collect();
        sqlx::query(
            "UPDATE relations SET last_msg_id = j.value->>1 FROM json_each(?) AS j \
             WHERE relations.id = j.value->>0",
        )
        .bind(pairs(&last_ids))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    if group_rows.len() > 2 {
        sqlx::query(
            "INSERT INTO group_messages (group_id, msg_id, from_id, type, content, created) \
             SELECT value->>0, value->>1, value->>2, value->>3, unhex(value->>4), value->>5 \
             FROM json_each(?)",
        )
        .bind(group_rows)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let last_ids: Vec<[u32; 3]> = groups
            .iter()
            .filter_map(|(id, last)| last.map(|(last, chated)| [*id, last, chated]))
            .collect();
        sqlx::query(
            "UPDATE groups SET last_msg_id = j.value->>1, last_chated = j.value->>2 \
             FROM json_each(?) AS j WHERE groups.id = j.value->>0",
        )
        .bind(pairs(&last_ids))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    let last_ids = LastIds {
        relations: relations
            .into_iter()
            .filter_map(|(id, last)| Some((id, last?)))
            .collect(),
        groups: groups
            .into_iter()
            .filter_map(|(id, last)| Some((id, last?)))
            .collect(),
    };
    Ok((results, last_ids))
}

/// Appends `[ints..., type, "hex content", created]` to a JSON array under construction.
fn push_row(rows: &mut String, ints: &[u32], message: &NewMessage) {
    if rows.len() > 1 {
        rows.push(',');
    }
    rows.push('[');
    for value in ints {
        let _ = write!(rows, "{value},");
    }
    let _ = write!(
        rows,
        "{},\"{}\",{}]",
        message.msg_type.to_wire(),
        hex(&message.content),
        message.created.0
    );
}

/// A JSON array of integer tuples.
fn pairs<const N: usize>(rows: &[[u32; N]]) -> String {
    let mut out = String::from("[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        for (j, value) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "{value}");
        }
        out.push(']');
    }
    out.push(']');
    out
}

async fn add_group_messages(
    tx: &mut SqliteConnection,
    writes: impl Iterator<Item = &Write>,
) -> StoreResult<()> {
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for write in writes {
        if let Write::AddGroupMessage { group } | Write::RecordGroup { group, .. } = write {
            *counts.entry(group.0).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return Ok(());
    }
    let rows: Vec<[u32; 2]> = counts.into_iter().map(|(g, n)| [g, n]).collect();
    sqlx::query("UPDATE groups SET msg_count = msg_count + j.value->>1 FROM json_each(?) AS j WHERE groups.id = j.value->>0")
        .bind(pairs(&rows))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}

async fn catch_up(
    tx: &mut SqliteConnection,
    writes: impl Iterator<Item = &Write>,
) -> StoreResult<()> {
    let rows: Vec<[u32; 2]> = writes
        .filter_map(|w| match w {
            Write::CatchUp { user, group } => Some([group.0, user.0]),
            Write::RecordGroup { group, message, .. } => Some([group.0, message.from.0]),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE group_members SET caught_up = g.msg_count FROM json_each(?) AS j, groups AS g \
         WHERE group_members.group_id = j.value->>0 AND group_members.user_id = j.value->>1 \
         AND g.id = group_members.group_id",
    )
    .bind(pairs(&rows))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn add_unread(
    tx: &mut SqliteConnection,
    writes: impl Iterator<Item = &Write>,
) -> StoreResult<()> {
    let mut counts: HashMap<(u32, u32), u32> = HashMap::new();
    for write in writes {
        let (owner, peer) = match write {
            Write::AddUnread { owner, peer } => (*owner, *peer),
            Write::RecordSingle { to, message, .. } => (*to, message.from),
            _ => continue,
        };
        *counts.entry((owner.0, peer.0)).or_default() += 1;
    }
    if counts.is_empty() {
        return Ok(());
    }
    let rows: Vec<[u32; 3]> = counts.into_iter().map(|((o, p), n)| [o, p, n]).collect();
    sqlx::query(
        "INSERT INTO unread (owner, peer, count) SELECT value->>0, value->>1, value->>2 \
         FROM json_each(?) WHERE true \
         ON CONFLICT (owner, peer) DO UPDATE SET count = count + excluded.count",
    )
    .bind(pairs(&rows))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

async fn touch_sessions(
    tx: &mut SqliteConnection,
    writes: impl Iterator<Item = &Write>,
) -> StoreResult<()> {
    let mut latest: HashMap<(u32, i32, u32), u32> = HashMap::new();
    for write in writes {
        let mut touch = |owner: UserId, peer: Peer, now: Timestamp| {
            let at = latest
                .entry((owner.0, peer.kind().to_wire(), peer.raw()))
                .or_default();
            *at = (*at).max(now.0);
        };
        match write {
            Write::TouchSession { owner, peer, now } => touch(*owner, *peer, *now),
            Write::RecordSingle {
                to, message, now, ..
            } => {
                touch(message.from, Peer::User(*to), *now);
                touch(*to, Peer::User(message.from), *now);
            }
            Write::RecordGroup {
                group,
                message,
                now,
            } => {
                touch(message.from, Peer::Group(*group), *now);
            }
            _ => {}
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let rows: Vec<[u32; 4]> = latest
        .into_iter()
        .map(|((o, k, p), t)| [o, k.unsigned_abs(), p, t])
        .collect();
    sqlx::query(
        "INSERT INTO sessions (owner, kind, peer, visible, created, updated) \
         SELECT value->>0, value->>1, value->>2, 1, value->>3, value->>3 FROM json_each(?) WHERE true \
         ON CONFLICT (owner, kind, peer) DO UPDATE SET visible = 1, updated = excluded.updated",
    )
    .bind(pairs(&rows))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Every other write, one statement (or a few) at a time.
async fn apply_one(tx: &mut SqliteConnection, write: &Write) -> StoreResult<Done> {
    let changed = |done: sqlx::sqlite::SqliteQueryResult| Done::Changed(done.rows_affected() > 0);
    Ok(match write {
        Write::SetSignInfo {
            user,
            sign_info,
            now,
        } => changed(
            sqlx::query("UPDATE users SET sign_info = ?, updated = ? WHERE id = ?")
                .bind(sign_info.clone())
                .bind(now.0)
                .bind(user.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?,
        ),
        Write::SetPushShield { user, shield, now } => changed(
            sqlx::query("UPDATE users SET push_shield = ?, updated = ? WHERE id = ?")
                .bind(i64::from(*shield))
                .bind(now.0)
                .bind(user.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?,
        ),
        Write::SetCredentials {
            user,
            credentials,
            now,
        } => changed(
            sqlx::query("UPDATE users SET password_hash = ?, salt = ?, updated = ? WHERE id = ?")
                .bind(credentials.password_hash.as_str())
                .bind(credentials.salt.as_str())
                .bind(now.0)
                .bind(user.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?,
        ),
        Write::UpdateProfile { user, change, now } => changed(
            sqlx::query(
                "UPDATE users SET nick = COALESCE(?, nick), gender = COALESCE(?, gender), \
                 avatar = COALESCE(?, avatar), department = COALESCE(?, department), \
                 email = COALESCE(?, email), phone = COALESCE(?, phone), updated = ? WHERE id = ?",
            )
            .bind(change.nick.clone())
            .bind(change.gender)
            .bind(change.avatar.clone())
            .bind(change.department.map(|d| d.0))
            .bind(change.email.clone())
            .bind(change.phone.clone())
            .bind(now.0)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?,
        ),
        Write::SetStatus { user, status, now } => changed(
            sqlx::query("UPDATE users SET status = ?, updated = ? WHERE id = ?")
                .bind(*status)
                .bind(now.0)
                .bind(user.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?,
        ),
        Write::AddUser { user, now } => {
            let p = &user.profile;
            // The writer is the database's only writer: checking inside its transaction makes
            // check and insertion atomic.
            let existing: Option<u32> = sqlx::query_scalar(super::USER_ID_NAMED)
                .bind(login_name_key(&p.name).to_owned())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if let Some(existing) = existing {
                return Err(StoreError::NameTaken {
                    name: p.name.clone(),
                    existing: UserId(existing),
                });
            }
            Done::Id(
                sqlx::query_scalar(
                    "INSERT INTO users (name, nick, gender, avatar, department, email, phone, domain, \
                     status, sign_info, push_shield, password_hash, salt, created, updated) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(p.name.clone())
                .bind(p.nick.clone())
                .bind(p.gender)
                .bind(p.avatar.clone())
                .bind(p.department.0)
                .bind(p.email.clone())
                .bind(p.phone.clone())
                .bind(p.domain.clone())
                .bind(p.status)
                .bind(p.sign_info.clone())
                .bind(i64::from(p.push_shield))
                .bind(user.credentials.password_hash.clone())
                .bind(user.credentials.salt.clone())
                .bind(now.0)
                .bind(now.0)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?,
            )
        }
        Write::AddDepartment { department, now } => Done::Id(
            sqlx::query_scalar(
                "INSERT INTO departments (name, priority, parent, status, created, updated) \
                 VALUES (?, ?, ?, 0, ?, ?) RETURNING id",
            )
            .bind(department.name.clone())
            .bind(department.priority)
            .bind(department.parent.0)
            .bind(now.0)
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?,
        ),
        Write::CreateRelation { small, big, now } => {
            sqlx::query(
                "INSERT INTO relations (small_id, big_id, created) VALUES (?, ?, ?) \
                 ON CONFLICT (small_id, big_id) DO NOTHING",
            )
            .bind(small.0)
            .bind(big.0)
            .bind(now.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Done::Id(
                sqlx::query_scalar("SELECT id FROM relations WHERE small_id = ? AND big_id = ?")
                    .bind(small.0)
                    .bind(big.0)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?,
            )
        }
        Write::RemoveSession { owner, peer, now } => changed(
            sqlx::query(
                "UPDATE sessions SET visible = 0, updated = ? \
                 WHERE owner = ? AND kind = ? AND peer = ? AND visible = 1",
            )
            .bind(now.0)
            .bind(owner.0)
            .bind(peer.kind().to_wire())
            .bind(peer.raw())
            .execute(&mut *tx)
            .await
            .map_err(db)?,
        ),
        Write::RemoveGroupSessions { group, users, now } => {
            sqlx::query(
                "UPDATE sessions SET visible = 0, updated = ? \
                 WHERE kind = 2 AND peer = ? AND owner IN (SELECT value FROM json_each(?))",
            )
            .bind(now.0)
            .bind(group.0)
            .bind(id_array(users.iter().map(|u| u.0)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Done::Unit
        }
        Write::RefreshGroupSessions {
            group,
            members,
            last_chated,
            now,
        } => {
            sqlx::query(
                "INSERT INTO sessions (owner, kind, peer, visible, created, updated) \
                 SELECT value, 2, ?, 1, ?, ? FROM json_each(?) WHERE true \
                 ON CONFLICT (owner, kind, peer) DO UPDATE SET updated = ?",
            )
            .bind(group.0)
            .bind(now.0)
            .bind(now.0)
            .bind(id_array(members.iter().map(|u| u.0)))
            .bind(last_chated.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Done::Unit
        }
        Write::ClearUnread { owner, peer } => {
            sqlx::query("DELETE FROM unread WHERE owner = ? AND peer = ?")
                .bind(owner.0)
                .bind(peer.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            Done::Unit
        }
        Write::CreateGroup { group, now } => {
            let id: u32 = sqlx::query_scalar(
                "INSERT INTO groups (name, avatar, creator, type, version, user_cnt, created, updated) \
                 VALUES (?, ?, ?, ?, 1, ?, ?, ?) RETURNING id",
            )
            .bind(group.name.clone())
            .bind(group.avatar.clone())
            .bind(group.creator.0)
            .bind(group.group_type.to_wire())
            .bind(u32::try_from(group.members.len()).unwrap_or(u32::MAX))
            .bind(now.0)
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id, joined, updated) \
                 SELECT ?, value, ?, ? FROM json_each(?) WHERE true ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(now.0)
            .bind(now.0)
            .bind(id_array(group.members.iter().map(|u| u.0)))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Done::Id(id)
        }
        Write::AddMembers { group, users, now } => {
            let mut added = Vec::new();
            for user in users {
                let done = sqlx::query(
                    "INSERT INTO group_members (group_id, user_id, joined, updated) \
                     SELECT id, ?, ?, ? FROM groups WHERE id = ? ON CONFLICT DO NOTHING",
                )
                .bind(user.0)
                .bind(now.0)
                .bind(now.0)
                .bind(group.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if done.rows_affected() > 0 {
                    added.push(*user);
                }
            }
            if !added.is_empty() {
                bump_group(tx, *group).await?;
            }
            Done::Users(added)
        }
        Write::RemoveMembers { group, users } => {
            let mut removed = Vec::new();
            for user in users {
                let done =
                    sqlx::query("DELETE FROM group_members WHERE group_id = ? AND user_id = ?")
                        .bind(group.0)
                        .bind(user.0)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                if done.rows_affected() > 0 {
                    removed.push(*user);
                }
            }
            if !removed.is_empty() {
                bump_group(tx, *group).await?;
            }
            Done::Users(removed)
        }
        Write::SetDeviceToken {
            user,
            client_type,
            token,
        } => {
            sqlx::query("DELETE FROM device_tokens WHERE user_id = ? OR token = ?")
                .bind(user.0)
                .bind(token.clone())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            if !token.is_empty() {
                sqlx::query(
                    "INSERT INTO device_tokens (user_id, client_type, token) VALUES (?, ?, ?)",
                )
                .bind(user.0)
                .bind(client_type.map(ClientType::to_wire))
                .bind(token.clone())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            Done::Unit
        }
        Write::SetGroupShield {
            group,
            user,
            shielded,
        } => {
            sqlx::query(
                "INSERT INTO group_shields (group_id, user_id, shielded) VALUES (?, ?, ?) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET shielded = excluded.shielded",
            )
            .bind(group.0)
            .bind(user.0)
            .bind(i64::from(*shielded))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Done::Unit
        }
        Write::AddOfflineFile { file } => {
            sqlx::query(
                "INSERT INTO offline_files (from_id, to_id, task_id, file_name, size, created) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(file.from.0)
            .bind(file.to.0)
            .bind(file.task_id.clone())
            .bind(file.file_name.clone())
            .bind(file.size)
            .bind(file.created.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            Done::Unit
        }
        Write::RemoveOfflineFile { from, to, task_id } => changed(
            sqlx::query(
                "DELETE FROM offline_files WHERE from_id = ? AND to_id = ? AND task_id = ?",
            )
            .bind(from.0)
            .bind(to.0)
            .bind(task_id.clone())
            .execute(&mut *tx)
            .await
            .map_err(db)?,
        ),
        // Grouped writes arriving here (the retry path) are applied as batches of one.
        Write::AppendSingle { .. }
        | Write::AppendGroup { .. }
        | Write::RecordSingle { .. }
        | Write::RecordGroup { .. } => {
            return Err(StoreError::Inconsistent(
                "appends go through append()".into(),
            ));
        }
        Write::TouchSession { .. } => {
            touch_sessions(tx, std::iter::once(write)).await?;
            Done::Unit
        }
        Write::AddUnread { .. } => {
            add_unread(tx, std::iter::once(write)).await?;
            Done::Unit
        }
        Write::AddGroupMessage { .. } => {
            add_group_messages(tx, std::iter::once(write)).await?;
            Done::Unit
        }
        Write::CatchUp { .. } => {
            catch_up(tx, std::iter::once(write)).await?;
            Done::Unit
        }
    })
}

/// Version +1 and the member count recomputed, after a membership change.
async fn bump_group(tx: &mut SqliteConnection, group: GroupId) -> StoreResult<()> {
    sqlx::query(
        "UPDATE groups SET version = version + 1, \
         user_cnt = (SELECT count(*) FROM group_members WHERE group_id = ?) WHERE id = ?",
    )
    .bind(group.0)
    .bind(group.0)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

impl Done {
    pub(super) fn id(self) -> StoreResult<u32> {
        match self {
            Done::Id(id) => Ok(id),
            other => Err(StoreError::Inconsistent(format!(
                "expected an id, got {other:?}"
            ))),
        }
    }

    pub(super) fn changed(self) -> StoreResult<bool> {
        match self {
            Done::Changed(changed) => Ok(changed),
            other => Err(StoreError::Inconsistent(format!(
                "expected a change flag, got {other:?}"
            ))),
        }
    }

    pub(super) fn users(self) -> StoreResult<Vec<UserId>> {
        match self {
            Done::Users(users) => Ok(users),
            other => Err(StoreError::Inconsistent(format!(
                "expected users, got {other:?}"
            ))),
        }
    }
}
