//! The embedded SQLite backend, the default: one database file, no server to run.
//!
//! - **Durability.** WAL journal. [`Durability::ProcessCrash`] (`synchronous = NORMAL`, the
//!   default): everything a call reported as done survives a crash or `kill -9` of the process;
//!   the last transactions may be lost on power failure or an OS crash.
//!   [`Durability::PowerLoss`] (`synchronous = FULL`): every reported write is on disk (one
//!   fsync per transaction), at a large cost in write throughput on most disks.
//! - **Concurrency and group commit.** All writes go through one writer task on one connection
//!   (SQLite has a single writer anyway; this avoids `SQLITE_BUSY`), which commits every write
//!   pending at that moment in one transaction and answers each only after the commit (see
//!   `writer.rs`). Reads use a pool of read-only connections that never block the writer.
//! - **Message ids.** Allocating a conversation's next id and storing the message is one
//!   transaction: ids start at 1, strictly increase, and are never reused, also after a crash.
//! - **Schema.** Created and upgraded on open (`PRAGMA user_version`); see `schema_v1.sql`.
//! - **SQL.** Every statement is a constant with bound parameters; variable-length id lists are
//!   bound as one JSON array and read with `json_each`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use teamtalk_core::domain::{
    ClientType, DepartmentId, GroupId, GroupType, MsgId, MsgType, RelationId, Timestamp, UserId,
};
use teamtalk_core::store::{
    login_name_key, Credentials, Department, DeviceStore, DeviceToken, FileStore, Group,
    GroupStore, Member, MessageQuery, MessageStore, NewDepartment, NewGroup, NewMessage, NewUser,
    OfflineFile, Peer, ProfileChange, RecentSession, RecordMessage, SessionStore, StoreError,
    StoreResult, StoredMessage, UnreadStore, User, UserStore,
};
use writer::{Done, Write, Writer};

/// How much of what a call reported as done must survive which failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash or kill of the process (`synchronous = NORMAL` in WAL mode). Default.
    #[default]
    ProcessCrash,
    /// Also survives power loss and OS crashes (`synchronous = FULL`: an fsync per commit).
    PowerLoss,
}

/// Where and how to open the database.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file; created when missing.
    pub path: PathBuf,
    /// Durability of reported writes. Default: [`Durability::ProcessCrash`].
    pub durability: Durability,
    /// Read-only connections in the read pool. Default: 4.
    pub read_connections: u32,
}

impl SqliteConfig {
    /// Default settings for the database file `path`.
    pub fn new(path: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            path: path.into(),
            durability: Durability::default(),
            read_connections: 4,
        }
    }
}

/// The SQLite store. Clones share the same connections; the writer task stops when the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    /// Relation ids never change once created: (small, big) → id.
    relations: Arc<Mutex<HashMap<(u32, u32), RelationId>>>,
    /// Users known to exist (users are never deleted).
    known_users: Arc<Mutex<std::collections::HashSet<UserId>>>,
    /// The background checkpointer stops when the last clone of the store is gone.
    _alive: Arc<()>,
}

/// Copies the WAL back into the database several times a second without blocking the writer
/// (`wal_checkpoint(PASSIVE)`), so that commits rarely pay for a checkpoint themselves.
async fn checkpoint_in_background(
    mut connection: sqlx::SqliteConnection,
    alive: std::sync::Weak<()>,
) {
    use sqlx::Connection;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if alive.upgrade().is_none() {
            let _ = connection.close().await;
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut connection)
            .await
        {
            tracing::debug!(%error, "background checkpoint failed");
        }
    }
}

/// Schema scripts; script `i` takes the database from `user_version` i to i + 1.
const MIGRATIONS: &[(&str, &str)] = &[(include_str!("schema_v1.sql"), "PRAGMA user_version = 1")];

fn db(error: sqlx::Error) -> StoreError {
    StoreError::backend(error)
}

/// A JSON array of ids, bound as one parameter and expanded by `json_each(?)`.
fn id_array(ids: impl IntoIterator<Item = u32>) -> String {
    let mut out = String::from("[");
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push(']');
    out
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the database.
    pub async fn open(config: &SqliteConfig) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.durability {
                Durability::ProcessCrash => SqliteSynchronous::Normal,
                Durability::PowerLoss => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(30))
            .disable_statement_logging();
        let writer_options = options
            .clone()
            // The writer never checkpoints in the way of a commit unless the WAL grows past
            // ~64 MiB: a background connection checkpoints it (PASSIVE) several times a second.
            .pragma("wal_autocheckpoint", "16384")
            // A bigger page cache (64 MiB) for the hot b-tree pages of busy conversations.
            .pragma("cache_size", "-65536");
        let mut connection = writer_options.connect().await.map_err(db)?;
        migrate(&mut connection).await?;
        let writer = Writer::spawn(connection);
        // A local file cannot go stale: no ping before every use.
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(config.read_connections.max(1))
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(db)?;
        let alive = Arc::new(());
        let checkpointer = options.connect().await.map_err(db)?;
        tokio::spawn(checkpoint_in_background(
            checkpointer,
            Arc::downgrade(&alive),
        ));
        Ok(SqliteStore {
            writer,
            reader,
            relations: Arc::default(),
            known_users: Arc::default(),
            _alive: alive,
        })
    }

    /// Writes a consistent, compacted copy of the database to `path` while the store stays in
    /// use (`VACUUM INTO` on a read connection: a snapshot of the last commit). `path` must
    /// not exist yet. Files kept beside the database (msfs, offline files) are not included.
    pub async fn backup_to(&self, path: &std::path::Path) -> StoreResult<()> {
        if path.exists() {
            return Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", path.display()),
            )));
        }
        let target = path.to_str().ok_or_else(|| {
            StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a UTF-8 path", path.display()),
            ))
        })?;
        sqlx::query("VACUUM INTO ?")
            .bind(target.to_owned())
            .execute(&self.reader)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Closes the read connections. The writer finishes its pending writes and closes (which
    /// checkpoints the WAL) when the last clone of the store is dropped.
    pub async fn close(&self) {
        self.reader.close().await;
    }

    async fn write(&self, write: Write) -> StoreResult<Done> {
        self.writer.write(write).await
    }

    /// A write that stores a message and reports its id.
    async fn write_message(&self, write: Write) -> StoreResult<MsgId> {
        Ok(MsgId(self.write(write).await?.id()?))
    }

    fn cached_relation(&self, key: (u32, u32)) -> Option<RelationId> {
        self.relations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
    }
}

async fn migrate(connection: &mut SqliteConnection) -> StoreResult<()> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *connection)
        .await
        .map_err(db)?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Inconsistent(format!(
            "database schema version {version} is newer than this program ({})",
            MIGRATIONS.len()
        )));
    }
    for (script, set_version) in MIGRATIONS.iter().skip(applied) {
        let mut tx = connection.begin().await.map_err(db)?;
        sqlx::raw_sql(*script).execute(&mut *tx).await.map_err(db)?;
        sqlx::raw_sql(*set_version)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
    }
    Ok(())
}

fn user_from(row: &SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: UserId(row.try_get("id")?),
        name: row.try_get("name")?,
        nick: row.try_get("nick")?,
        gender: row.try_get("gender")?,
        avatar: row.try_get("avatar")?,
        department: DepartmentId(row.try_get("department")?),
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        domain: row.try_get("domain")?,
        status: row.try_get("status")?,
        sign_info: row.try_get("sign_info")?,
        push_shield: row.try_get::<i64, _>("push_shield")? != 0,
        updated: Timestamp(row.try_get("updated")?),
    })
}

fn users_from(rows: &[SqliteRow]) -> StoreResult<Vec<User>> {
    rows.iter().map(|r| user_from(r).map_err(db)).collect()
}

fn department_from(row: &SqliteRow) -> Result<Department, sqlx::Error> {
    Ok(Department {
        id: DepartmentId(row.try_get("id")?),
        name: row.try_get("name")?,
        priority: row.try_get("priority")?,
        parent: DepartmentId(row.try_get("parent")?),
        status: row.try_get("status")?,
        updated: Timestamp(row.try_get("updated")?),
    })
}

/// A message row; rows with a type outside the protocol are skipped (`None`).
fn message_from(row: &SqliteRow) -> Result<Option<StoredMessage>, sqlx::Error> {
    let Some(msg_type) = MsgType::from_wire(row.try_get("type")?) else {
        return Ok(None);
    };
    Ok(Some(StoredMessage {
        id: MsgId(row.try_get("msg_id")?),
        from: UserId(row.try_get("from_id")?),
        created: Timestamp(row.try_get("created")?),
        msg_type,
        content: Bytes::from(row.try_get::<Vec<u8>, _>("content")?),
    }))
}

fn messages_from(rows: &[SqliteRow]) -> StoreResult<Vec<StoredMessage>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(message) = message_from(row).map_err(db)? {
            out.push(message);
        }
    }
    Ok(out)
}

/// (since, limit, highest id, id list) of a query; the id list is `None` for a page.
fn query_parts(query: &MessageQuery) -> (u32, i64, u32, Option<String>) {
    match query {
        MessageQuery::Page {
            up_to,
            since,
            limit,
        } => (
            since.0,
            limit_of(*limit),
            up_to.map_or(u32::MAX, |id| id.0),
            None,
        ),
        MessageQuery::Ids { ids, since, limit } => (
            since.0,
            limit_of(*limit),
            u32::MAX,
            Some(id_array(ids.iter().map(|id| id.0))),
        ),
    }
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Users named like `?1`, a [`login_name_key`] (equal once trailing spaces are removed, as
/// MySQL's `utf8mb4_bin` compares IMUser.name). Such names lie in `[?1, ?1 || '!')` in
/// binary order (`' '` is the only character below `'!'` that may follow), so the
/// `users_name` index narrows the search before `rtrim` decides.
macro_rules! named_like {
    ($head:literal, $tail:literal) => {
        concat!(
            $head,
            " WHERE name >= ?1 AND name < ?1 || '!' AND rtrim(name, ' ') = ?1",
            $tail
        )
    };
}
const LOGIN_CANDIDATE: &str = named_like!(
    "SELECT * FROM users",
    " AND status = 0 ORDER BY id DESC LIMIT 1"
);
const USER_NAMED: &str = named_like!("SELECT * FROM users", " ORDER BY id DESC LIMIT 1");
/// The id of a user whose name equals `?1` ([`login_name_key`]), the highest.
pub(super) const USER_ID_NAMED: &str =
    named_like!("SELECT id FROM users", " ORDER BY id DESC LIMIT 1");

#[async_trait::async_trait]

impl UserStore for SqliteStore {
    async fn login_candidate(&self, name: &str) -> StoreResult<Option<(User, Credentials)>> {
        let row = sqlx::query(LOGIN_CANDIDATE)
            .bind(login_name_key(name).to_owned())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let user = user_from(&row).map_err(db)?;
        let credentials = Credentials {
            password_hash: row.try_get("password_hash").map_err(db)?,
            salt: row.try_get("salt").map_err(db)?,
        };
        Ok(Some((user, credentials)))
    }

    async fn user_named(&self, name: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(USER_NAMED)
            .bind(login_name_key(name).to_owned())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        row.map(|row| user_from(&row).map_err(db)).transpose()
    }

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(
            "SELECT * FROM users WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(id_array(ids.iter().map(|u| u.0)))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        users_from(&rows)
    }

    async fn user_exists(&self, user: UserId) -> StoreResult<bool> {
        let known = |s: &Self| {
            s.known_users
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&user)
        };
        if known(self) {
            return Ok(true);
        }
        let found: Option<u32> = sqlx::query_scalar("SELECT id FROM users WHERE id = ?")
            .bind(user.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        if found.is_some() {
            self.known_users
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(user);
        }
        Ok(found.is_some())
    }

    async fn users_changed_since(&self, since: Timestamp) -> StoreResult<Vec<User>> {
        let rows = if since.0 == 0 {
            sqlx::query("SELECT * FROM users WHERE status != 3 ORDER BY id")
                .fetch_all(&self.reader)
                .await
        } else {
            sqlx::query("SELECT * FROM users WHERE updated >= ? ORDER BY id")
                .bind(since.0)
                .fetch_all(&self.reader)
                .await
        }
        .map_err(db)?;
        users_from(&rows)
    }

    async fn departments_changed_since(&self, since: Timestamp) -> StoreResult<Vec<Department>> {
        let rows = sqlx::query(
            "SELECT * FROM departments WHERE updated > ? AND status IN (0, 1) ORDER BY id",
        )
        .bind(since.0)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| department_from(r).map_err(db))
            .collect()
    }

    async fn set_sign_info(
        &self,
        user: UserId,
        sign_info: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.write(Write::SetSignInfo {
            user,
            sign_info: sign_info.to_owned(),
            now,
        })
        .await?
        .changed()
    }

    async fn set_push_shield(
        &self,
        user: UserId,
        shield: bool,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.write(Write::SetPushShield { user, shield, now })
            .await?
            .changed()
    }

    async fn set_credentials(
        &self,
        user: UserId,
        credentials: &Credentials,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.write(Write::SetCredentials {
            user,
            credentials: credentials.clone(),
            now,
        })
        .await?
        .changed()
    }

    async fn update_profile(
        &self,
        user: UserId,
        change: &ProfileChange,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.write(Write::UpdateProfile {
            user,
            change: Box::new(change.clone()),
            now,
        })
        .await?
        .changed()
    }

    async fn set_status(&self, user: UserId, status: u32, now: Timestamp) -> StoreResult<bool> {
        self.write(Write::SetStatus { user, status, now })
            .await?
            .changed()
    }

    async fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>> {
        let value: Option<i64> = sqlx::query_scalar("SELECT push_shield FROM users WHERE id = ?")
            .bind(user.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(value.map(|v| v != 0))
    }

    async fn add_user(&self, user: &NewUser, now: Timestamp) -> StoreResult<UserId> {
        Ok(UserId(
            self.write(Write::AddUser {
                user: Box::new(user.clone()),
                now,
            })
            .await?
            .id()?,
        ))
    }

    async fn add_department(
        &self,
        department: &NewDepartment,
        now: Timestamp,
    ) -> StoreResult<DepartmentId> {
        let department = department.clone();
        Ok(DepartmentId(
            self.write(Write::AddDepartment { department, now })
                .await?
                .id()?,
        ))
    }
}

#[async_trait::async_trait]

impl SessionStore for SqliteStore {
    async fn relation(
        &self,
        a: UserId,
        b: UserId,
        create: bool,
    ) -> StoreResult<Option<RelationId>> {
        if a.0 == 0 || b.0 == 0 {
            return Ok(None);
        }
        let key = (a.min(b).0, a.max(b).0);
        if let Some(id) = self.cached_relation(key) {
            return Ok(Some(id));
        }
        let existing: Option<u32> =
            sqlx::query_scalar("SELECT id FROM relations WHERE small_id = ? AND big_id = ?")
                .bind(key.0)
                .bind(key.1)
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
        let id = match existing {
            Some(id) => id,
            None if create => {
                let (small, big) = (UserId(key.0), UserId(key.1));
                // Unix time of creation is informational only; the store has no clock.
                self.write(Write::CreateRelation {
                    small,
                    big,
                    now: Timestamp(0),
                })
                .await?
                .id()?
            }
            None => return Ok(None),
        };
        let id = RelationId(id);
        self.relations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, id);
        Ok(Some(id))
    }

    async fn touch_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<()> {
        self.write(Write::TouchSession { owner, peer, now })
            .await
            .map(drop)
    }

    async fn recent_sessions(
        &self,
        owner: UserId,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<RecentSession>> {
        let rows = sqlx::query(
            "SELECT kind, peer, updated FROM sessions \
             WHERE owner = ? AND visible = 1 AND updated > ? \
             ORDER BY updated DESC, id DESC LIMIT ?",
        )
        .bind(owner.0)
        .bind(since.0)
        .bind(limit_of(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: i32 = row.try_get("kind").map_err(db)?;
            let Some(kind) = teamtalk_core::domain::SessionKind::from_wire(kind) else {
                continue;
            };
            sessions.push(RecentSession {
                peer: Peer::new(kind, row.try_get("peer").map_err(db)?),
                updated: Timestamp(row.try_get("updated").map_err(db)?),
            });
        }
        Ok(sessions)
    }

    async fn remove_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<bool> {
        self.write(Write::RemoveSession { owner, peer, now })
            .await?
            .changed()
    }

    async fn remove_group_sessions(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<()> {
        let users = users.to_vec();
        self.write(Write::RemoveGroupSessions { group, users, now })
            .await
            .map(drop)
    }

    async fn refresh_group_sessions(
        &self,
        group: GroupId,
        members: &[UserId],
        last_chated: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let members = members.to_vec();
        self.write(Write::RefreshGroupSessions {
            group,
            members,
            last_chated,
            now,
        })
        .await
        .map(drop)
    }
}

#[async_trait::async_trait]

impl MessageStore for SqliteStore {
    async fn append_single(
        &self,
        relation: RelationId,
        to: UserId,
        message: &NewMessage,
    ) -> StoreResult<MsgId> {
        let message = message.clone();
        self.write_message(Write::AppendSingle {
            relation,
            to,
            message,
        })
        .await
    }

    async fn append_group(&self, group: GroupId, message: &NewMessage) -> StoreResult<MsgId> {
        let message = message.clone();
        self.write_message(Write::AppendGroup { group, message })
            .await
    }

    async fn single_messages(
        &self,
        relation: RelationId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.read_messages(&SINGLE_READS, relation.0, query).await
    }

    async fn group_messages(
        &self,
        group: GroupId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.read_messages(&GROUP_READS, group.0, query).await
    }
}

/// The two reads of a conversation's messages: a page, and a list of ids.
struct MessageReads {
    page: &'static str,
    ids: &'static str,
}

const SINGLE_READS: MessageReads = MessageReads {
    page: "SELECT msg_id, from_id, created, type, content FROM messages \
           WHERE relation = ? AND created >= ? AND msg_id <= ? \
           ORDER BY created DESC, id DESC LIMIT ?",
    ids: "SELECT msg_id, from_id, created, type, content FROM messages \
          WHERE relation = ? AND created >= ? AND msg_id IN (SELECT value FROM json_each(?)) \
          ORDER BY created DESC, id DESC LIMIT ?",
};

const GROUP_READS: MessageReads = MessageReads {
    page: "SELECT msg_id, from_id, created, type, content FROM group_messages \
           WHERE group_id = ? AND created >= ? AND msg_id <= ? \
           ORDER BY created DESC, id DESC LIMIT ?",
    ids: "SELECT msg_id, from_id, created, type, content FROM group_messages \
          WHERE group_id = ? AND created >= ? AND msg_id IN (SELECT value FROM json_each(?)) \
          ORDER BY created DESC, id DESC LIMIT ?",
};

impl SqliteStore {
    async fn read_messages(
        &self,
        sql: &MessageReads,
        conversation: u32,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        let (since, limit, up_to, ids) = query_parts(query);
        let rows = match ids {
            None => sqlx::query(sql.page)
                .bind(conversation)
                .bind(since)
                .bind(up_to)
                .bind(limit),
            Some(ids) => sqlx::query(sql.ids)
                .bind(conversation)
                .bind(since)
                .bind(ids)
                .bind(limit),
        }
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        messages_from(&rows)
    }
}

/// One writer operation per message: its append joins the batch's bulk insert and its
/// counters and sessions the batch's bulk statements, all in one commit.
#[async_trait::async_trait]
impl RecordMessage for SqliteStore {
    async fn record_single(
        &self,
        relation: RelationId,
        to: UserId,
        message: &NewMessage,
        now: Timestamp,
    ) -> StoreResult<MsgId> {
        let message = message.clone();
        self.write_message(Write::RecordSingle {
            relation,
            to,
            message,
            now,
        })
        .await
    }

    async fn record_group(
        &self,
        group: GroupId,
        message: &NewMessage,
        now: Timestamp,
    ) -> StoreResult<MsgId> {
        let message = message.clone();
        self.write_message(Write::RecordGroup {
            group,
            message,
            now,
        })
        .await
    }
}

#[async_trait::async_trait]

impl UnreadStore for SqliteStore {
    async fn add_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()> {
        self.write(Write::AddUnread { owner, peer }).await.map(drop)
    }

    async fn clear_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()> {
        self.write(Write::ClearUnread { owner, peer })
            .await
            .map(drop)
    }

    async fn unread_counts(&self, owner: UserId) -> StoreResult<Vec<(UserId, u32)>> {
        let rows = sqlx::query(
            "SELECT peer, count FROM unread WHERE owner = ? AND count > 0 ORDER BY peer",
        )
        .bind(owner.0)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserId(r.try_get("peer").map_err(db)?),
                    r.try_get("count").map_err(db)?,
                ))
            })
            .collect()
    }

    async fn add_group_message(&self, group: GroupId) -> StoreResult<()> {
        self.write(Write::AddGroupMessage { group }).await.map(drop)
    }

    async fn catch_up(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        self.write(Write::CatchUp { user, group }).await.map(drop)
    }

    async fn group_unread(&self, user: UserId, group: GroupId) -> StoreResult<Option<u32>> {
        let row = sqlx::query(
            "SELECT g.msg_count AS total, m.caught_up AS seen FROM groups g \
             LEFT JOIN group_members m ON m.group_id = g.id AND m.user_id = ? \
             WHERE g.id = ? AND g.msg_count > 0",
        )
        .bind(user.0)
        .bind(group.0)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let total: u32 = row.try_get("total").map_err(db)?;
        let seen: Option<u32> = row.try_get("seen").map_err(db)?;
        Ok(Some(total.saturating_sub(seen.unwrap_or(0))))
    }
}

fn group_from(row: &SqliteRow) -> Result<Option<Group>, sqlx::Error> {
    let Some(group_type) = GroupType::from_wire(row.try_get("type")?) else {
        return Ok(None);
    };
    Ok(Some(Group {
        id: GroupId(row.try_get("id")?),
        name: row.try_get("name")?,
        avatar: row.try_get("avatar")?,
        creator: UserId(row.try_get("creator")?),
        group_type,
        version: row.try_get("version")?,
        updated: Timestamp(row.try_get("updated")?),
        last_chated: Timestamp(row.try_get("last_chated")?),
    }))
}

#[async_trait::async_trait]

impl GroupStore for SqliteStore {
    async fn create_group(&self, group: &NewGroup, now: Timestamp) -> StoreResult<GroupId> {
        let group = Box::new(group.clone());
        Ok(GroupId(
            self.write(Write::CreateGroup { group, now }).await?.id()?,
        ))
    }

    async fn group(&self, group: GroupId) -> StoreResult<Option<Group>> {
        let row = sqlx::query("SELECT * FROM groups WHERE id = ?")
            .bind(group.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        match row {
            Some(row) => group_from(&row).map_err(db),
            None => Ok(None),
        }
    }

    async fn members(&self, group: GroupId) -> StoreResult<Option<Vec<Member>>> {
        let rows = sqlx::query(
            "SELECT user_id, joined FROM group_members WHERE group_id = ? ORDER BY user_id",
        )
        .bind(group.0)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user: UserId(r.try_get("user_id").map_err(db)?),
                    joined: Timestamp(r.try_get("joined").map_err(db)?),
                })
            })
            .collect::<StoreResult<Vec<Member>>>()
            .map(Some)
    }

    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<Member>> {
        let joined: Option<u32> = sqlx::query_scalar(
            "SELECT joined FROM group_members WHERE group_id = ? AND user_id = ?",
        )
        .bind(group.0)
        .bind(user.0)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(joined.map(|j| Member {
            user,
            joined: Timestamp(j),
        }))
    }

    async fn add_members(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<Vec<UserId>> {
        let users = users.to_vec();
        self.write(Write::AddMembers { group, users, now })
            .await?
            .users()
    }

    async fn remove_members(
        &self,
        group: GroupId,
        users: &[UserId],
        _now: Timestamp,
    ) -> StoreResult<Vec<UserId>> {
        let users = users.to_vec();
        self.write(Write::RemoveMembers { group, users })
            .await?
            .users()
    }

    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>> {
        let ids: Vec<u32> = sqlx::query_scalar(
            "SELECT group_id FROM group_members WHERE user_id = ? ORDER BY updated DESC, id DESC",
        )
        .bind(user.0)
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        Ok(ids.into_iter().map(GroupId).collect())
    }

    async fn groups_chatted_since(
        &self,
        since: Timestamp,
    ) -> StoreResult<Vec<(GroupId, Timestamp)>> {
        let rows =
            sqlx::query("SELECT id, last_chated FROM groups WHERE last_chated >= ? ORDER BY id")
                .bind(since.0)
                .fetch_all(&self.reader)
                .await
                .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    GroupId(r.try_get("id").map_err(db)?),
                    Timestamp(r.try_get("last_chated").map_err(db)?),
                ))
            })
            .collect()
    }
}

#[async_trait::async_trait]

impl DeviceStore for SqliteStore {
    async fn set_device_token(
        &self,
        user: UserId,
        client_type: Option<ClientType>,
        token: &str,
    ) -> StoreResult<()> {
        let token = token.to_owned();
        self.write(Write::SetDeviceToken {
            user,
            client_type,
            token,
        })
        .await
        .map(drop)
    }

    async fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>> {
        let rows = sqlx::query(
            "SELECT user_id, client_type, token FROM device_tokens \
             WHERE user_id IN (SELECT value FROM json_each(?))",
        )
        .bind(id_array(users.iter().map(|u| u.0)))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let mut found = std::collections::HashMap::new();
        for row in rows {
            let client_type: Option<i32> = row.try_get("client_type").map_err(db)?;
            let Some(client_type @ (ClientType::Ios | ClientType::Android)) =
                client_type.and_then(ClientType::from_wire)
            else {
                continue;
            };
            let user = UserId(row.try_get("user_id").map_err(db)?);
            found.insert(
                user,
                DeviceToken {
                    user,
                    client_type,
                    token: row.try_get("token").map_err(db)?,
                },
            );
        }
        Ok(users.iter().filter_map(|u| found.remove(u)).collect())
    }

    async fn set_group_shield(
        &self,
        group: GroupId,
        user: UserId,
        shielded: bool,
    ) -> StoreResult<()> {
        self.write(Write::SetGroupShield {
            group,
            user,
            shielded,
        })
        .await
        .map(drop)
    }

    async fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let rows = sqlx::query(
            "SELECT user_id, shielded FROM group_shields \
             WHERE group_id = ? AND user_id IN (SELECT value FROM json_each(?))",
        )
        .bind(group.0)
        .bind(id_array(users.iter().map(|u| u.0)))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let mut flags = std::collections::HashMap::new();
        for row in rows {
            let user: u32 = row.try_get("user_id").map_err(db)?;
            let shielded: i64 = row.try_get("shielded").map_err(db)?;
            flags.insert(user, shielded != 0);
        }
        Ok(users
            .iter()
            .map(|u| flags.get(&u.0).copied().unwrap_or(false))
            .collect())
    }
}

#[async_trait::async_trait]

impl FileStore for SqliteStore {
    async fn offline_files(&self, to: UserId) -> StoreResult<Vec<OfflineFile>> {
        let rows = sqlx::query("SELECT * FROM offline_files WHERE to_id = ? ORDER BY created, id")
            .bind(to.0)
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(OfflineFile {
                    from: UserId(r.try_get("from_id").map_err(db)?),
                    to: UserId(r.try_get("to_id").map_err(db)?),
                    task_id: r.try_get("task_id").map_err(db)?,
                    file_name: r.try_get("file_name").map_err(db)?,
                    size: r.try_get("size").map_err(db)?,
                    created: Timestamp(r.try_get("created").map_err(db)?),
                })
            })
            .collect()
    }

    async fn add_offline_file(&self, file: &OfflineFile) -> StoreResult<()> {
        self.write(Write::AddOfflineFile { file: file.clone() })
            .await
            .map(drop)
    }

    async fn remove_offline_file(
        &self,
        from: UserId,
        to: UserId,
        task_id: &str,
    ) -> StoreResult<bool> {
        let task_id = task_id.to_owned();
        self.write(Write::RemoveOfflineFile { from, to, task_id })
            .await?
            .changed()
    }
}
