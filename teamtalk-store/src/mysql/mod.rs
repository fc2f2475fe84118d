//! MySQL + Redis with the **original TeamTalk tables and Redis keys**: point it at the
//! database and Redis of an existing TeamTalk deployment and keep its data.
//!
//! - Tables as in docs/storage.md § MySQL tables (IMUser, IMDepart, IMGroup, IMGroupMember,
//!   IMMessage_0..7 by `relateId % 8`, IMGroupMessage_0..7 by `groupId % 8`, IMRecentSession,
//!   IMRelationShip, IMTransmitFile); [`MysqlRedisStore::bootstrap`] creates them for a fresh
//!   install and leaves existing ones alone.
//! - Writes go to the master URL, reads to the slave URL (the same URL is fine), as the
//!   original's `teamtalk_master` / `teamtalk_slave` pools.
//! - Redis keys and logical instances (`unread`, `group_set`, `token`, `group_member`) as the
//!   original (`keys.rs`); each instance is a URL with its db number, so the two shipped
//!   `dbproxyserver.conf` layouts both map.
//! - Every SQL statement is a constant with bound parameters (`sql.rs`).
//! - NULL in nullable columns reads as empty / 0. Creation of relations and sessions is
//!   serialized with MySQL named locks, so concurrent first messages cannot duplicate rows
//!   also across several db_proxy processes.
//! - Group membership lives in the Redis hash `group_member_{g}` as in the original;
//!   [`MysqlRedisStore::rebuild_group_members`] restores it from IMGroupMember after a Redis
//!   loss.
//! - Message ids come from Redis `INCRBY`; should a counter have vanished (Redis restarted
//!   without persistence), it is repaired to continue after the largest stored id instead of
//!   restarting at 1 (see `next_msg_id` for the remaining window).
//! - Audio messages as the original: the bytes go to msfs ([`MysqlRedisConfig::msfs_url`]), an
//!   IMAudio row keeps their URL, size and duration, and the message content is the row id;
//!   reading downloads them again. Without an msfs URL audio messages are refused.

mod keys;
mod msfs;
#[macro_use]
mod sql;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use fred::prelude::{Builder, Client, Config};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::Row;
use teamtalk_core::domain::{
    ClientType, DepartmentId, GroupId, GroupType, MsgId, MsgType, RelationId, SessionKind,
    Timestamp, UserId,
};
use teamtalk_core::store::{
    login_name_key, Credentials, Department, DeviceStore, DeviceToken, FileStore, Group,
    GroupStore, Member, MessageQuery, MessageStore, NewDepartment, NewGroup, NewMessage, NewUser,
    OfflineFile, Peer, ProfileChange, RecentSession, RecordMessage, SessionStore, StoreError,
    StoreResult, StoredMessage, UnreadStore, User, UserStore,
};

use keys::{Keys, COUNT};
use msfs::Msfs;
use sql::{chunks, shard, sized};
use writer::{MessageRow, Record, Writer};

/// Connection settings.
#[derive(Clone, Debug)]
pub struct MysqlRedisConfig {
    /// `teamtalk_master`: every write, e.g. `mysql://user:pw@127.0.0.1:3306/teamtalk`.
    pub master_url: String,
    /// `teamtalk_slave`: every read; may equal `master_url`.
    pub slave_url: String,
    /// The Redis logical instances.
    pub redis: RedisInstances,
    /// Prepended to every Redis key; empty (the default) for the original key names.
    pub key_prefix: String,
    /// Connections per MySQL pool. Default 16 (the original's `maxconncnt`).
    pub max_connections: u32,
    /// Base URL of the msfs that keeps audio messages (the original's `MsfsSite`, as a full
    /// URL such as `http://127.0.0.1:8700/`). Without it audio messages are refused.
    pub msfs_url: Option<String>,
}

/// The original's Redis instances, each a URL with its db number
/// (`redis://127.0.0.1:6379/1`). `sync` is configured in the original but never used.
#[derive(Clone, Debug)]
pub struct RedisInstances {
    /// Unread counters, message-id counters.
    pub unread: String,
    /// Group push shields.
    pub group_set: String,
    /// Device push tokens.
    pub token: String,
    /// Group membership and join times.
    pub group_member: String,
}

impl RedisInstances {
    /// Every instance on the same server and db.
    pub fn all(url: &str) -> RedisInstances {
        RedisInstances {
            unread: url.to_owned(),
            group_set: url.to_owned(),
            token: url.to_owned(),
            group_member: url.to_owned(),
        }
    }
}

impl MysqlRedisConfig {
    /// One MySQL database for reads and writes, one Redis db for every instance.
    pub fn new(mysql_url: &str, redis_url: &str) -> MysqlRedisConfig {
        MysqlRedisConfig {
            master_url: mysql_url.to_owned(),
            slave_url: mysql_url.to_owned(),
            redis: RedisInstances::all(redis_url),
            key_prefix: String::new(),
            max_connections: 16,
            msfs_url: None,
        }
    }
}

/// The store over an original TeamTalk MySQL database and Redis. Clones share connections.
#[derive(Clone, Debug)]
pub struct MysqlRedisStore {
    master: MySqlPool,
    slave: MySqlPool,
    unread: Client,
    group_set: Client,
    token: Client,
    group_member: Client,
    keys: Keys,
    msfs: Option<Msfs>,
    relations: Arc<Mutex<HashMap<(u32, u32), RelationId>>>,
    known_users: Arc<Mutex<HashSet<UserId>>>,
    /// The newest `IMRecentSession` row id of (owner, type, peer). Rows are never deleted (a
    /// removed session is `status = 1`) and a new one is inserted only when none exists, so
    /// once known the id stays the one `upsert_session` would pick.
    sessions: Arc<Mutex<HashMap<SessionKey, u32>>>,
    writer: Writer,
}

/// What [`MysqlRedisStore::upsert_session`] does to an existing session row.
#[derive(Clone, Copy, Debug)]
enum OnExisting {
    /// Make it visible again, updated at this time (a new message).
    Reactivate(Timestamp),
    /// Only move its time, visible or not (the group-session sync, Q-54).
    MoveTo(Timestamp),
}

fn db(error: sqlx::Error) -> StoreError {
    StoreError::backend(error)
}

fn redis(error: fred::error::Error) -> StoreError {
    StoreError::backend(error)
}

const BOOTSTRAP: &str = include_str!("bootstrap.sql");

impl MysqlRedisStore {
    /// Connects to MySQL (master and slave) and every Redis instance.
    pub async fn connect(config: &MysqlRedisConfig) -> StoreResult<MysqlRedisStore> {
        let pool = |url: &str| {
            MySqlPoolOptions::new()
                .max_connections(config.max_connections.max(1))
                .connect_lazy(url)
        };
        let master = pool(&config.master_url).map_err(db)?;
        let slave = pool(&config.slave_url).map_err(db)?;
        sqlx::query("SELECT 1").execute(&master).await.map_err(db)?;
        Ok(MysqlRedisStore {
            slave,
            unread: redis_client(&config.redis.unread).await?,
            group_set: redis_client(&config.redis.group_set).await?,
            token: redis_client(&config.redis.token).await?,
            group_member: redis_client(&config.redis.group_member).await?,
            keys: Keys::new(&config.key_prefix),
            msfs: config.msfs_url.as_deref().map(Msfs::new).transpose()?,
            relations: Arc::default(),
            known_users: Arc::default(),
            sessions: Arc::default(),
            writer: Writer::spawn(master.clone()),
            master,
        })
    }

    /// Creates the original tables that do not exist yet (idempotent; data is kept).
    pub async fn bootstrap(&self) -> StoreResult<()> {
        sqlx::raw_sql(BOOTSTRAP)
            .execute(&self.master)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Rebuilds the Redis member hash of `group` from IMGroupMember (status 0, join time =
    /// `updated`), for recovery after Redis lost its data. Returns the member count.
    pub async fn rebuild_group_members(&self, group: GroupId) -> StoreResult<usize> {
        let rows = sqlx::query(
            "SELECT userId, updated FROM IMGroupMember WHERE groupId = ? AND status = 0",
        )
        .bind(group.0)
        .fetch_all(&self.master)
        .await
        .map_err(db)?;
        let key = self.keys.group_member(group);
        let _: i64 = self.group_member.del(&key).await.map_err(redis)?;
        let mut fields: Vec<(String, String)> = Vec::with_capacity(rows.len());
        for row in &rows {
            fields.push((
                u32_col(row, "userId")?.to_string(),
                u32_col(row, "updated")?.to_string(),
            ));
        }
        if !fields.is_empty() {
            let _: i64 = self
                .group_member
                .hset(&key, fields.clone())
                .await
                .map_err(redis)?;
        }
        Ok(fields.len())
    }

    /// Deletes every Redis key under this store's key prefix (tests; refuses an empty prefix).
    pub async fn delete_prefixed_keys(&self) -> StoreResult<()> {
        if self.keys.prefix().is_empty() {
            return Err(StoreError::Inconsistent(
                "refusing to delete keys without a prefix".into(),
            ));
        }
        let pattern = format!("{}*", self.keys.prefix());
        for client in [
            &self.unread,
            &self.group_set,
            &self.token,
            &self.group_member,
        ] {
            let found: Vec<String> = client
                .custom(fred::cmd!("KEYS"), vec![pattern.clone()])
                .await
                .map_err(redis)?;
            if !found.is_empty() {
                let _: i64 = client.del(found).await.map_err(redis)?;
            }
        }
        Ok(())
    }

    /// Runs `f` on one master connection holding the named lock `name` (serializing creation
    /// across processes), and releases it.
    async fn locked<T>(
        &self,
        name: String,
        f: impl AsyncFnOnce(&mut sqlx::MySqlConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut held = LockHolder {
            conn: self.master.acquire().await.map_err(db)?,
            released: false,
        };
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 30)")
            .bind(name.clone())
            .fetch_one(&mut *held.conn)
            .await
            .map_err(db)?;
        if got != Some(1) {
            held.released = true; // not taken
            return Err(StoreError::Inconsistent(format!(
                "could not take lock {name}"
            )));
        }
        let result = f(&mut held.conn).await;
        let released: Result<Option<i64>, _> = sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
            .bind(name)
            .fetch_one(&mut *held.conn)
            .await;
        held.released = matches!(released, Ok(Some(1)));
        result
    }
}

/// A master connection that may hold a named lock. Dropped before the lock is known to be
/// released (the request was aborted, say at shutdown, or `RELEASE_LOCK` failed), it is
/// closed instead of going back to the pool: closing the session releases the lock, where a
/// pooled connection would keep it and make every later taker wait 30 s and fail.
struct LockHolder {
    conn: sqlx::pool::PoolConnection<sqlx::MySql>,
    released: bool,
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

/// (owner, session type as stored, peer id).
type SessionKey = (u32, i32, u32);

/// The session cache's key of (owner, peer).
fn session_key(owner: UserId, peer: Peer) -> SessionKey {
    (owner.0, peer.kind().to_wire(), peer.raw())
}

async fn redis_client(url: &str) -> StoreResult<Client> {
    let client = Builder::from_config(Config::from_url(url).map_err(redis)?)
        .build()
        .map_err(redis)?;
    client.init().await.map_err(redis)?;
    Ok(client)
}

/// An unsigned integer column, whatever its declared signedness; NULL reads as 0.
fn u32_col(row: &MySqlRow, name: &str) -> StoreResult<u32> {
    let value: Option<i64> = match row.try_get::<Option<i64>, _>(name) {
        Ok(v) => v,
        Err(_) => row
            .try_get::<Option<u64>, _>(name)
            .map_err(db)?
            .map(|v| v as i64),
    };
    u32::try_from(value.unwrap_or(0))
        .map_err(|_| StoreError::Inconsistent(format!("column {name} out of range")))
}

/// A text column (binary collations arrive as bytes); NULL reads as "".
fn str_col(row: &MySqlRow, name: &str) -> StoreResult<String> {
    match row.try_get::<Option<String>, _>(name) {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(_) => {
            let bytes: Option<Vec<u8>> = row.try_get(name).map_err(db)?;
            Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
        }
    }
}

fn bytes_col(row: &MySqlRow, name: &str) -> StoreResult<Bytes> {
    let bytes: Option<Vec<u8>> = match row.try_get::<Option<Vec<u8>>, _>(name) {
        Ok(v) => v,
        Err(_) => row
            .try_get::<Option<String>, _>(name)
            .map_err(db)?
            .map(String::into_bytes),
    };
    Ok(Bytes::from(bytes.unwrap_or_default()))
}

fn user_from(row: &MySqlRow) -> StoreResult<User> {
    Ok(User {
        id: UserId(u32_col(row, "id")?),
        name: str_col(row, "name")?,
        nick: str_col(row, "nick")?,
        gender: u32_col(row, "sex")?,
        avatar: str_col(row, "avatar")?,
        department: DepartmentId(u32_col(row, "departId")?),
        email: str_col(row, "email")?,
        phone: str_col(row, "phone")?,
        domain: str_col(row, "domain")?,
        status: u32_col(row, "status")?,
        sign_info: str_col(row, "sign_info")?,
        push_shield: u32_col(row, "push_shield_status")? != 0,
        updated: Timestamp(u32_col(row, "updated")?),
    })
}

fn message_from(row: &MySqlRow, from_column: &str) -> StoreResult<Option<StoredMessage>> {
    let Some(msg_type) = MsgType::from_wire(u32_col(row, "type")? as i32) else {
        return Ok(None); // rows with a type outside the protocol are skipped
    };
    Ok(Some(StoredMessage {
        id: MsgId(u32_col(row, "msgId")?),
        from: UserId(u32_col(row, from_column)?),
        created: Timestamp(u32_col(row, "created")?),
        msg_type,
        content: bytes_col(row, "content")?,
    }))
}

// Statements used more than once.
const USERS_BY_ID: [&str; 4] = in_list!(
    "SELECT id, sex, name, domain, nick, password, salt, phone, email, avatar, departId, status, \
     updated, push_shield_status, sign_info FROM IMUser WHERE id IN ",
    ""
);
const SINGLE_PAGE: [&str; 8] = sharded!(
    "SELECT id, msgId, fromId, created, type, content FROM ",
    "IMMessage_",
    " FORCE INDEX (idx_relateId_status_created) WHERE relateId = ? AND status = 0 \
     AND created >= ? AND msgId <= ? ORDER BY created DESC, id DESC LIMIT ?"
);
const SINGLE_BY_ID: [[&str; 4]; 8] = sharded_in_list!(
    "SELECT id, msgId, fromId, created, type, content FROM ",
    "IMMessage_",
    " WHERE relateId = ? AND status = 0 AND created >= ? AND msgId IN ",
    ""
);
const SINGLE_INSERT: [[&str; 3]; 8] = sharded_insert!(
    "IMMessage_",
    "(relateId, fromId, toId, msgId, content, status, type, created, updated)",
    "(?, ?, ?, ?, ?, 0, ?, ?, ?)"
);
const SINGLE_FIRST: [&str; 8] = sharded!(
    "SELECT CAST(id AS SIGNED) FROM ",
    "IMMessage_",
    " WHERE relateId = ? AND msgId = 1 LIMIT 1"
);
const GROUP_FIRST: [&str; 8] = sharded!(
    "SELECT CAST(id AS SIGNED) FROM ",
    "IMGroupMessage_",
    " WHERE groupId = ? AND msgId = 1 LIMIT 1"
);
const SINGLE_MAX_ID: [&str; 8] = sharded!(
    "SELECT CAST(MAX(msgId) AS SIGNED) FROM ",
    "IMMessage_",
    " WHERE relateId = ?"
);
const GROUP_PAGE: [&str; 8] = sharded!(
    "SELECT id, msgId, userId, created, type, content FROM ",
    "IMGroupMessage_",
    " WHERE groupId = ? AND status = 0 AND created >= ? AND msgId <= ? \
     ORDER BY created DESC, id DESC LIMIT ?"
);
const GROUP_BY_ID: [[&str; 4]; 8] = sharded_in_list!(
    "SELECT id, msgId, userId, created, type, content FROM ",
    "IMGroupMessage_",
    " WHERE groupId = ? AND status = 0 AND created >= ? AND msgId IN ",
    ""
);
const GROUP_INSERT: [[&str; 3]; 8] = sharded_insert!(
    "IMGroupMessage_",
    "(groupId, userId, msgId, content, type, status, created, updated)",
    "(?, ?, ?, ?, ?, 0, ?, ?)"
);
const GROUP_MAX_ID: [&str; 8] = sharded!(
    "SELECT CAST(MAX(msgId) AS SIGNED) FROM ",
    "IMGroupMessage_",
    " WHERE groupId = ?"
);

#[async_trait::async_trait]

impl UserStore for MysqlRedisStore {
    async fn login_candidate(&self, name: &str) -> StoreResult<Option<(User, Credentials)>> {
        let row = sqlx::query(
            "SELECT id, sex, name, domain, nick, password, salt, phone, email, avatar, departId, \
             status, updated, push_shield_status, sign_info FROM IMUser \
             WHERE name = ? AND COALESCE(status, 0) = 0 ORDER BY id DESC LIMIT 1",
        )
        .bind(name.to_owned())
        .fetch_optional(&self.slave)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let credentials = Credentials {
            password_hash: str_col(&row, "password")?,
            salt: str_col(&row, "salt")?,
        };
        Ok(Some((user_from(&row)?, credentials)))
    }

    async fn user_named(&self, name: &str) -> StoreResult<Option<User>> {
        // The master: an administrator acts on what was just written.
        let row = sqlx::query(
            "SELECT id, sex, name, domain, nick, password, salt, phone, email, avatar, departId, \
             status, updated, push_shield_status, sign_info FROM IMUser \
             WHERE name = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(name.to_owned())
        .fetch_optional(&self.master)
        .await
        .map_err(db)?;
        row.map(|row| user_from(&row)).transpose()
    }

    async fn user_exists(&self, user: UserId) -> StoreResult<bool> {
        if self
            .known_users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&user)
        {
            return Ok(true);
        }
        let found: Option<i64> =
            sqlx::query_scalar("SELECT CAST(id AS SIGNED) FROM IMUser WHERE id = ?")
                .bind(user.0)
                .fetch_optional(&self.slave)
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

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let ids: Vec<u32> = ids.iter().map(|u| u.0).collect();
        let mut users = Vec::new();
        for (size, chunk) in chunks(&ids) {
            let mut query = sqlx::query(sized(&USERS_BY_ID, size));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.slave).await.map_err(db)? {
                users.push(user_from(&row)?);
            }
        }
        users.sort_by_key(|u| u.id);
        users.dedup_by_key(|u| u.id);
        Ok(users)
    }

    async fn users_changed_since(&self, since: Timestamp) -> StoreResult<Vec<User>> {
        let rows = if since.0 == 0 {
            sqlx::query(
                "SELECT id, sex, name, domain, nick, password, salt, phone, email, avatar, departId, \
                 status, updated, push_shield_status, sign_info FROM IMUser \
                 WHERE COALESCE(status, 0) != 3 ORDER BY id",
            )
            .fetch_all(&self.slave)
            .await
        } else {
            sqlx::query(
                "SELECT id, sex, name, domain, nick, password, salt, phone, email, avatar, departId, \
                 status, updated, push_shield_status, sign_info FROM IMUser \
                 WHERE updated >= ? ORDER BY id",
            )
            .bind(since.0)
            .fetch_all(&self.slave)
            .await
        }
        .map_err(db)?;
        rows.iter().map(user_from).collect()
    }

    async fn departments_changed_since(&self, since: Timestamp) -> StoreResult<Vec<Department>> {
        let rows = sqlx::query(
            "SELECT id, departName, priority, parentId, status, updated FROM IMDepart \
             WHERE updated > ? AND status IN (0, 1) ORDER BY id",
        )
        .bind(since.0)
        .fetch_all(&self.slave)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(Department {
                    id: DepartmentId(u32_col(row, "id")?),
                    name: str_col(row, "departName")?,
                    priority: u32_col(row, "priority")?,
                    parent: DepartmentId(u32_col(row, "parentId")?),
                    status: u32_col(row, "status")?,
                    updated: Timestamp(u32_col(row, "updated")?),
                })
            })
            .collect()
    }

    async fn set_sign_info(
        &self,
        user: UserId,
        sign_info: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        sqlx::query("UPDATE IMUser SET sign_info = ?, updated = ? WHERE id = ?")
            .bind(sign_info.to_owned())
            .bind(now.0)
            .bind(user.0)
            .execute(&self.master)
            .await
            .map_err(db)?;
        // MySQL counts changed rows only: an unchanged value is still a success.
        let exists = self.exists_on_master(user).await?;
        if exists {
            let key = format!("{}total_user_update", self.keys.prefix());
            let _: () = self
                .unread
                .set(key, now.0.to_string(), None, None, false)
                .await
                .map_err(redis)?;
        }
        Ok(exists)
    }

    async fn set_push_shield(
        &self,
        user: UserId,
        shield: bool,
        now: Timestamp,
    ) -> StoreResult<bool> {
        sqlx::query("UPDATE IMUser SET push_shield_status = ?, updated = ? WHERE id = ?")
            .bind(u32::from(shield))
            .bind(now.0)
            .bind(user.0)
            .execute(&self.master)
            .await
            .map_err(db)?;
        self.exists_on_master(user).await
    }

    async fn set_credentials(
        &self,
        user: UserId,
        credentials: &Credentials,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE IMUser SET password = ?, salt = ?, updated = ? WHERE id = ?")
                .bind(credentials.password_hash.as_str())
                .bind(credentials.salt.as_str())
                .bind(now.0)
                .bind(user.0)
                .execute(&self.master)
                .await
                .map_err(db)?;
        // Matched rows (CLIENT_FOUND_ROWS), also when nothing changed.
        Ok(done.rows_affected() > 0)
    }

    async fn update_profile(
        &self,
        user: UserId,
        change: &ProfileChange,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE IMUser SET nick = COALESCE(?, nick), sex = COALESCE(?, sex), \
             avatar = COALESCE(?, avatar), departId = COALESCE(?, departId), \
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
        .execute(&self.master)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_status(&self, user: UserId, status: u32, now: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE IMUser SET status = ?, updated = ? WHERE id = ?")
            .bind(status)
            .bind(now.0)
            .bind(user.0)
            .execute(&self.master)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>> {
        let row = sqlx::query("SELECT push_shield_status FROM IMUser WHERE id = ?")
            .bind(user.0)
            .fetch_optional(&self.slave)
            .await
            .map_err(db)?;
        row.map(|r| u32_col(&r, "push_shield_status").map(|v| v != 0))
            .transpose()
    }

    async fn add_user(&self, user: &NewUser, now: Timestamp) -> StoreResult<UserId> {
        // The original schema has no unique key on IMUser.name (and we keep it as it is): a
        // named lock per name serializes the check and the insertion across every
        // teamtalk-rs process on this database. `name = ?` compares as the column's
        // utf8mb4_bin collation does (trailing spaces ignored), the lock name hashes the same
        // form (`login_name_key`), and MySQL limits lock names to 64 characters.
        let key = login_name_key(&user.profile.name);
        let lock = format!("tt_user_{}", teamtalk_core::password::client_password(key));
        let user = user.clone();
        self.locked(lock, async move |conn| {
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(id AS SIGNED) FROM IMUser WHERE name = ? ORDER BY id DESC LIMIT 1",
            )
            .bind(user.profile.name.clone())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
            if let Some(existing) = existing {
                return Err(StoreError::NameTaken {
                    name: user.profile.name.clone(),
                    existing: UserId(inserted_id(u64::try_from(existing).unwrap_or(0))?),
                });
            }
            let p = &user.profile;
            let done = sqlx::query(
                "INSERT INTO IMUser (sex, name, domain, nick, password, salt, phone, email, avatar, \
                 departId, status, created, updated, push_shield_status, sign_info) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(p.gender)
            .bind(p.name.clone())
            .bind(p.domain.clone())
            .bind(p.nick.clone())
            .bind(user.credentials.password_hash.clone())
            .bind(user.credentials.salt.clone())
            .bind(p.phone.clone())
            .bind(p.email.clone())
            .bind(p.avatar.clone())
            .bind(p.department.0)
            .bind(p.status)
            .bind(now.0)
            .bind(now.0)
            .bind(u32::from(p.push_shield))
            .bind(p.sign_info.clone())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
            Ok(UserId(inserted_id(done.last_insert_id())?))
        })
        .await
    }

    async fn add_department(
        &self,
        department: &NewDepartment,
        now: Timestamp,
    ) -> StoreResult<DepartmentId> {
        let done = sqlx::query(
            "INSERT INTO IMDepart (departName, priority, parentId, status, created, updated) \
             VALUES (?, ?, ?, 0, ?, ?)",
        )
        .bind(department.name.clone())
        .bind(department.priority)
        .bind(department.parent.0)
        .bind(now.0)
        .bind(now.0)
        .execute(&self.master)
        .await
        .map_err(db)?;
        Ok(DepartmentId(inserted_id(done.last_insert_id())?))
    }
}

fn inserted_id(id: u64) -> StoreResult<u32> {
    u32::try_from(id).map_err(|_| StoreError::Inconsistent(format!("id {id} out of range")))
}

impl MysqlRedisStore {
    /// Message content as the varchar column stores it: the text itself, or for audio the id
    /// of an IMAudio row after uploading the bytes to msfs (as the original db_proxy).
    async fn stored_content(&self, message: &NewMessage, to: u32) -> StoreResult<String> {
        if !message.msg_type.is_audio() {
            return String::from_utf8(message.content.to_vec())
                .map_err(|_| StoreError::Inconsistent("text message content is not UTF-8".into()));
        }
        let msfs = self.msfs.as_ref().ok_or_else(|| {
            StoreError::Inconsistent("audio messages need msfs: set msfs_url".into())
        })?;
        let (duration, audio) = match message.content.split_first_chunk::<4>() {
            Some((duration, audio)) if !audio.is_empty() => (u32::from_be_bytes(*duration), audio),
            _ => return Err(StoreError::Inconsistent("audio without data".into())),
        };
        let url = msfs.upload(audio).await?;
        let done = sqlx::query(
            "INSERT INTO IMAudio (fromId, toId, path, size, duration, created) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(message.from.0)
        .bind(to)
        .bind(url)
        .bind(u32::try_from(audio.len()).unwrap_or(u32::MAX))
        .bind(duration)
        .bind(message.created.0)
        .execute(&self.master)
        .await
        .map_err(db)?;
        Ok(done.last_insert_id().to_string())
    }

    /// The client form of a stored audio message: 4-byte duration + the bytes from msfs.
    /// `None` when its IMAudio row is missing (the message is left out, as the original); the
    /// stored id itself when msfs cannot deliver (the original's fallback, Q-67).
    async fn audio_payload(&self, content: &Bytes) -> StoreResult<Option<Bytes>> {
        let id: Option<u64> = std::str::from_utf8(content)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let Some(id) = id else {
            return Ok(Some(content.clone()));
        };
        let row = sqlx::query("SELECT path, size, duration FROM IMAudio WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.slave)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let (path, size, duration) = (
            str_col(&row, "path")?,
            u32_col(&row, "size")?,
            u32_col(&row, "duration")?,
        );
        let Some(msfs) = &self.msfs else {
            return Ok(Some(content.clone()));
        };
        match msfs.download(&path, size as usize).await {
            Ok(audio) => {
                let mut payload = Vec::with_capacity(4 + audio.len());
                payload.extend_from_slice(&duration.to_be_bytes());
                payload.extend_from_slice(&audio);
                Ok(Some(Bytes::from(payload)))
            }
            Err(error) => {
                tracing::warn!(audio_id = id, %error, "audio download failed; returning its id");
                Ok(Some(content.clone()))
            }
        }
    }

    async fn exists_on_master(&self, user: UserId) -> StoreResult<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT CAST(id AS SIGNED) FROM IMUser WHERE id = ?")
                .bind(user.0)
                .fetch_optional(&self.master)
                .await
                .map_err(db)?;
        Ok(found.is_some())
    }

    /// addSession of the original, serialized per (owner, peer) with a named lock: the
    /// newest row of any status is updated as `existing` says, or a visible row is inserted
    /// (`created = updated = now`). The row's id is remembered for [`Self::record`].
    async fn upsert_session(
        &self,
        owner: UserId,
        peer: Peer,
        existing: OnExisting,
        now: Timestamp,
    ) -> StoreResult<()> {
        let name = format!(
            "tt_ses_{}_{}_{}",
            owner.0,
            peer.kind().to_wire(),
            peer.raw()
        );
        let id = self
            .locked(name, async move |conn| {
                let row = Self::session_row(conn, owner, peer).await?;
                let session_id = row.map(|(id, _)| id);
                let update = match (row, existing) {
                (Some((id, _)), OnExisting::Reactivate(at)) => {
                    sqlx::query("UPDATE IMRecentSession SET status = 0, updated = ? WHERE id = ?")
                        .bind(at.0)
                        .bind(id)
                }
                (Some((id, _)), OnExisting::MoveTo(at)) => {
                    sqlx::query("UPDATE IMRecentSession SET updated = ? WHERE id = ?")
                        .bind(at.0)
                        .bind(id)
                }
                (None, _) => sqlx::query(
                    "INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated) \
                     VALUES (?, ?, ?, 0, ?, ?)",
                )
                .bind(owner.0)
                .bind(peer.raw())
                .bind(peer.kind().to_wire())
                .bind(now.0)
                .bind(now.0),
            };
                let done = update.execute(&mut *conn).await.map_err(db)?;
                match session_id {
                    Some(id) => Ok(id),
                    None => i64::try_from(done.last_insert_id())
                        .map_err(|_| StoreError::Inconsistent("session id out of range".into())),
                }
            })
            .await?;
        // Ids are positive (AUTO_INCREMENT); one that is not is simply not remembered.
        if let Ok(id) = u32::try_from(id) {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(session_key(owner, peer), id);
        }
        Ok(())
    }

    /// The newest session row of (owner, peer) of any status: (id, status).
    async fn session_row(
        conn: &mut sqlx::MySqlConnection,
        owner: UserId,
        peer: Peer,
    ) -> StoreResult<Option<(i64, u32)>> {
        let row = sqlx::query(
            "SELECT CAST(id AS SIGNED) AS id, status FROM IMRecentSession \
             WHERE userId = ? AND peerId = ? AND type = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(owner.0)
        .bind(peer.raw())
        .bind(peer.kind().to_wire())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        row.map(|r| {
            Ok((
                r.try_get::<i64, _>("id").map_err(db)?,
                u32_col(&r, "status")?,
            ))
        })
        .transpose()
    }

    /// The row of a single message: its content as stored and the relation's next id.
    async fn single_row(
        &self,
        relation: RelationId,
        to: UserId,
        message: &NewMessage,
    ) -> StoreResult<MessageRow> {
        let content = self.stored_content(message, to.0).await?;
        let id = self
            .next_msg_id(
                self.keys.msg_id(relation),
                shard(&SINGLE_FIRST, relation.0),
                shard(&SINGLE_MAX_ID, relation.0),
                relation.0,
            )
            .await?;
        Ok(MessageRow::Single {
            relation: relation.0,
            from: message.from.0,
            to: to.0,
            id,
            content,
            msg_type: message.msg_type.to_wire(),
            created: message.created.0,
        })
    }

    /// The row of a group message: its content as stored and the group's next id.
    async fn group_row(&self, group: GroupId, message: &NewMessage) -> StoreResult<MessageRow> {
        let content = self.stored_content(message, group.0).await?;
        let id = self
            .next_msg_id(
                self.keys.group_msg_id(group),
                shard(&GROUP_FIRST, group.0),
                shard(&GROUP_MAX_ID, group.0),
                group.0,
            )
            .await?;
        Ok(MessageRow::Group {
            group: group.0,
            from: message.from.0,
            id,
            content,
            msg_type: message.msg_type.to_wire(),
            created: message.created.0,
        })
    }

    /// Commits `row` with the sessions of `touched` made visible at `now`, through the group
    /// commit writer. Sessions whose row id is not known yet (or whose row vanished) are
    /// created or updated afterwards under their named lock, as `touch_session` does.
    async fn record(
        &self,
        row: MessageRow,
        touched: &[(UserId, Peer)],
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut known = Vec::with_capacity(touched.len());
        let mut unknown = Vec::new();
        {
            let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            for &(owner, peer) in touched {
                match sessions.get(&session_key(owner, peer)) {
                    Some(&id) => known.push(id),
                    None => unknown.push((owner, peer)),
                }
            }
        }
        let vanished = self
            .writer
            .write(Record {
                row,
                sessions: known,
                now: now.0,
            })
            .await?;
        if !vanished.is_empty() {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            for &(owner, peer) in touched {
                let key = session_key(owner, peer);
                if sessions.get(&key).is_some_and(|id| vanished.contains(id)) {
                    sessions.remove(&key);
                    unknown.push((owner, peer));
                }
            }
        }
        for (owner, peer) in unknown {
            self.upsert_session(owner, peer, OnExisting::Reactivate(now), now)
                .await?;
        }
        Ok(())
    }

    /// Allocates the next message id from `key`.
    ///
    /// Should the counter have vanished (Redis restarted without persistence) it would restart
    /// at 1 and hand out ids that are already stored. A legitimate 1 is never stored yet (its
    /// holder has not inserted it), so a stored message with id 1 proves the loss; the counter
    /// is then raised atomically past the largest stored id. Ids allocated by concurrent
    /// senders between the loss and that repair may still collide; nothing else can.
    async fn next_msg_id(
        &self,
        key: String,
        first_sql: &'static str,
        max_sql: &'static str,
        conversation: u32,
    ) -> StoreResult<u32> {
        let out_of_range = || StoreError::Inconsistent("message id out of range".into());
        let id: i64 = self.unread.incr_by(&key, 1).await.map_err(redis)?;
        if id == 1 {
            let first_stored: Option<i64> = sqlx::query_scalar(first_sql)
                .bind(conversation)
                .fetch_optional(&self.master)
                .await
                .map_err(db)?;
            if first_stored.is_some() {
                let max: Option<i64> = sqlx::query_scalar(max_sql)
                    .bind(conversation)
                    .fetch_one(&self.master)
                    .await
                    .map_err(db)?;
                let id: i64 = self
                    .unread
                    .incr_by(&key, max.unwrap_or(0))
                    .await
                    .map_err(redis)?;
                return u32::try_from(id).map_err(|_| out_of_range());
            }
        }
        u32::try_from(id).map_err(|_| out_of_range())
    }
}

#[async_trait::async_trait]

impl SessionStore for MysqlRedisStore {
    async fn relation(
        &self,
        a: UserId,
        b: UserId,
        create: bool,
    ) -> StoreResult<Option<RelationId>> {
        if a.0 == 0 || b.0 == 0 {
            return Ok(None);
        }
        let (small, big) = (a.min(b).0, a.max(b).0);
        if let Some(id) = self
            .relations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(small, big))
        {
            return Ok(Some(*id));
        }
        let find = "SELECT CAST(id AS SIGNED) FROM IMRelationShip \
                    WHERE smallId = ? AND bigId = ? AND COALESCE(status, 0) = 0 ORDER BY id DESC LIMIT 1";
        let found: Option<i64> = sqlx::query_scalar(find)
            .bind(small)
            .bind(big)
            .fetch_optional(&self.slave)
            .await
            .map_err(db)?;
        let id = match found {
            Some(id) => id,
            None if !create => return Ok(None),
            None => {
                self.locked(format!("tt_rel_{small}_{big}"), async move |conn| {
                    let any: Option<(i64, u32)> = sqlx::query(
                        "SELECT CAST(id AS SIGNED) AS id, CAST(COALESCE(status, 0) AS SIGNED) AS status FROM IMRelationShip \
                         WHERE smallId = ? AND bigId = ? ORDER BY id DESC LIMIT 1",
                    )
                    .bind(small)
                    .bind(big)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db)?
                    .map(|r| Ok::<_, StoreError>((r.try_get::<i64, _>("id").map_err(db)?, u32_col(&r, "status")?)))
                    .transpose()?;
                    match any {
                        Some((id, 0)) => Ok(id),
                        Some((id, _)) => {
                            sqlx::query("UPDATE IMRelationShip SET status = 0, updated = UNIX_TIMESTAMP() WHERE id = ?")
                                .bind(id)
                                .execute(&mut *conn)
                                .await
                                .map_err(db)?;
                            Ok(id)
                        }
                        None => {
                            let done = sqlx::query(
                                "INSERT INTO IMRelationShip (smallId, bigId, status, created, updated) \
                                 VALUES (?, ?, 0, UNIX_TIMESTAMP(), UNIX_TIMESTAMP())",
                            )
                            .bind(small)
                            .bind(big)
                            .execute(&mut *conn)
                            .await
                            .map_err(db)?;
                            // No "SET msg_id_{id} 0" as the original does: a concurrent sender may
                            // already have taken id 1 from the (missing) counter, and the reset
                            // would hand it out again. INCRBY on a missing key starts at 1.
                            let id = i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX);
                            Ok(id)
                        }
                    }
                })
                .await?
            }
        };
        let id = RelationId(
            u32::try_from(id)
                .map_err(|_| StoreError::Inconsistent("relation id out of range".into()))?,
        );
        self.relations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((small, big), id);
        Ok(Some(id))
    }

    async fn touch_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<()> {
        self.upsert_session(owner, peer, OnExisting::Reactivate(now), now)
            .await
    }

    async fn recent_sessions(
        &self,
        owner: UserId,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<RecentSession>> {
        let rows = sqlx::query(
            "SELECT peerId, type, updated FROM IMRecentSession \
             WHERE userId = ? AND COALESCE(status, 0) = 0 AND updated > ? ORDER BY updated DESC, id DESC LIMIT ?",
        )
        .bind(owner.0)
        .bind(since.0)
        .bind(u64::try_from(limit).unwrap_or(u64::MAX))
        .fetch_all(&self.slave)
        .await
        .map_err(db)?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(kind) = SessionKind::from_wire(u32_col(&row, "type")? as i32) else {
                continue;
            };
            sessions.push(RecentSession {
                peer: Peer::new(kind, u32_col(&row, "peerId")?),
                updated: Timestamp(u32_col(&row, "updated")?),
            });
        }
        Ok(sessions)
    }

    async fn remove_session(&self, owner: UserId, peer: Peer, now: Timestamp) -> StoreResult<bool> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(id AS SIGNED) FROM IMRecentSession \
             WHERE userId = ? AND peerId = ? AND type = ? AND COALESCE(status, 0) = 0 ORDER BY id DESC LIMIT 1",
        )
        .bind(owner.0)
        .bind(peer.raw())
        .bind(peer.kind().to_wire())
        .fetch_optional(&self.master)
        .await
        .map_err(db)?;
        let Some(id) = id else { return Ok(false) };
        let done = sqlx::query(
            "UPDATE IMRecentSession SET status = 1, updated = ? WHERE id = ? AND COALESCE(status, 0) = 0",
        )
        .bind(now.0)
        .bind(id)
        .execute(&self.master)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_group_sessions(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<()> {
        for user in users {
            sqlx::query(
                "UPDATE IMRecentSession SET status = 1, updated = ? \
                 WHERE userId = ? AND peerId = ? AND type = 2",
            )
            .bind(now.0)
            .bind(user.0)
            .bind(group.0)
            .execute(&self.master)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn refresh_group_sessions(
        &self,
        group: GroupId,
        members: &[UserId],
        last_chated: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        for &member in members {
            let existing = OnExisting::MoveTo(last_chated);
            self.upsert_session(member, Peer::Group(group), existing, now)
                .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]

impl MessageStore for MysqlRedisStore {
    async fn append_single(
        &self,
        relation: RelationId,
        to: UserId,
        message: &NewMessage,
    ) -> StoreResult<MsgId> {
        let row = self.single_row(relation, to, message).await?;
        let mut conn = self.master.acquire().await.map_err(db)?;
        writer::insert_rows(&mut conn, &[&row]).await?;
        Ok(MsgId(row.id()))
    }

    async fn append_group(&self, group: GroupId, message: &NewMessage) -> StoreResult<MsgId> {
        let row = self.group_row(group, message).await?;
        let mut conn = self.master.acquire().await.map_err(db)?;
        writer::insert_rows(&mut conn, &[&row]).await?;
        Ok(MsgId(row.id()))
    }

    async fn single_messages(
        &self,
        relation: RelationId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.read_messages(
            shard(&SINGLE_PAGE, relation.0),
            shard(&SINGLE_BY_ID, relation.0),
            relation.0,
            "fromId",
            query,
        )
        .await
    }

    async fn group_messages(
        &self,
        group: GroupId,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.read_messages(
            shard(&GROUP_PAGE, group.0),
            shard(&GROUP_BY_ID, group.0),
            group.0,
            "userId",
            query,
        )
        .await
    }
}

impl MysqlRedisStore {
    async fn read_messages(
        &self,
        page: &'static str,
        by_id: [&'static str; 4],
        conversation: u32,
        from_column: &str,
        query: &MessageQuery,
    ) -> StoreResult<Vec<StoredMessage>> {
        // (row id, message) so that results of several chunks can be ordered like one query.
        let mut found: Vec<(i64, StoredMessage)> = Vec::new();
        let limit = match query {
            MessageQuery::Page {
                up_to,
                since,
                limit,
            } => {
                let rows = sqlx::query(page)
                    .bind(conversation)
                    .bind(since.0)
                    .bind(up_to.map_or(u32::MAX, |id| id.0))
                    .bind(u64::try_from(*limit).unwrap_or(u64::MAX))
                    .fetch_all(&self.slave)
                    .await
                    .map_err(db)?;
                for row in rows {
                    if let Some(message) = message_from(&row, from_column)? {
                        found.push((row.try_get::<i64, _>("id").map_err(db)?, message));
                    }
                }
                *limit
            }
            MessageQuery::Ids { ids, since, limit } => {
                let ids: Vec<u32> = ids.iter().map(|id| id.0).collect();
                for (size, chunk) in chunks(&ids) {
                    let mut q = sqlx::query(sized(&by_id, size))
                        .bind(conversation)
                        .bind(since.0);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    for row in q.fetch_all(&self.slave).await.map_err(db)? {
                        if let Some(message) = message_from(&row, from_column)? {
                            found.push((row.try_get::<i64, _>("id").map_err(db)?, message));
                        }
                    }
                }
                *limit
            }
        };
        found.sort_by(|(ra, a), (rb, b)| b.created.cmp(&a.created).then(rb.cmp(ra)));
        found.dedup_by_key(|(row, _)| *row);
        let mut messages = Vec::with_capacity(limit.min(found.len()));
        for (_, mut message) in found.into_iter().take(limit) {
            if message.msg_type.is_audio() {
                match self.audio_payload(&message.content).await? {
                    Some(payload) => message.content = payload,
                    None => continue,
                }
            }
            messages.push(message);
        }
        Ok(messages)
    }
}

fn parse_u32(value: &str) -> u32 {
    value.trim().parse().unwrap_or(0)
}

/// The original's effects in its order (the MySQL rows, then the Redis counters), with the
/// MySQL writes of concurrent messages committed together (`writer.rs`).
#[async_trait::async_trait]
impl RecordMessage for MysqlRedisStore {
    async fn record_single(
        &self,
        relation: RelationId,
        to: UserId,
        message: &NewMessage,
        now: Timestamp,
    ) -> StoreResult<MsgId> {
        let from = message.from;
        let row = self.single_row(relation, to, message).await?;
        let id = MsgId(row.id());
        self.record(row, &[(from, Peer::User(to)), (to, Peer::User(from))], now)
            .await?;
        self.add_unread(to, from).await?;
        Ok(id)
    }

    async fn record_group(
        &self,
        group: GroupId,
        message: &NewMessage,
        now: Timestamp,
    ) -> StoreResult<MsgId> {
        let from = message.from;
        let row = self.group_row(group, message).await?;
        let id = MsgId(row.id());
        self.record(row, &[(from, Peer::Group(group))], now).await?;
        self.add_group_message(group).await?;
        self.catch_up(from, group).await?;
        Ok(id)
    }
}

#[async_trait::async_trait]

impl UnreadStore for MysqlRedisStore {
    async fn add_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()> {
        let _: i64 = self
            .unread
            .hincrby(self.keys.unread(owner), peer.0.to_string(), 1)
            .await
            .map_err(redis)?;
        Ok(())
    }

    async fn clear_unread(&self, owner: UserId, peer: UserId) -> StoreResult<()> {
        let _: i64 = self
            .unread
            .hdel(self.keys.unread(owner), peer.0.to_string())
            .await
            .map_err(redis)?;
        Ok(())
    }

    async fn unread_counts(&self, owner: UserId) -> StoreResult<Vec<(UserId, u32)>> {
        let all: HashMap<String, String> = self
            .unread
            .hgetall(self.keys.unread(owner))
            .await
            .map_err(redis)?;
        let mut counts: Vec<(UserId, u32)> = all
            .iter()
            .filter_map(|(peer, n)| Some((UserId(peer.parse().ok()?), parse_u32(n))))
            .filter(|(_, n)| *n > 0)
            .collect();
        counts.sort_unstable();
        Ok(counts)
    }

    async fn add_group_message(&self, group: GroupId) -> StoreResult<()> {
        let _: i64 = self
            .unread
            .hincrby(self.keys.group_count(group), COUNT, 1)
            .await
            .map_err(redis)?;
        Ok(())
    }

    async fn catch_up(&self, user: UserId, group: GroupId) -> StoreResult<()> {
        let all: HashMap<String, String> = self
            .unread
            .hgetall(self.keys.group_count(group))
            .await
            .map_err(redis)?;
        if !all.is_empty() {
            // nothing to copy while the group has no messages.
            let _: i64 = self
                .unread
                .hset(self.keys.user_group_count(user, group), all)
                .await
                .map_err(redis)?;
        }
        Ok(())
    }

    async fn group_unread(&self, user: UserId, group: GroupId) -> StoreResult<Option<u32>> {
        let total: Option<String> = self
            .unread
            .hget(self.keys.group_count(group), COUNT)
            .await
            .map_err(redis)?;
        let Some(total) = total else { return Ok(None) };
        let seen: Option<String> = self
            .unread
            .hget(self.keys.user_group_count(user, group), COUNT)
            .await
            .map_err(redis)?;
        Ok(Some(
            parse_u32(&total).saturating_sub(seen.as_deref().map_or(0, parse_u32)),
        ))
    }
}

#[async_trait::async_trait]

impl GroupStore for MysqlRedisStore {
    async fn create_group(&self, group: &NewGroup, now: Timestamp) -> StoreResult<GroupId> {
        let done = sqlx::query(
            "INSERT INTO IMGroup (name, avatar, creator, type, userCnt, status, version, lastChated, updated, created) \
             VALUES (?, ?, ?, ?, ?, 0, 1, 0, ?, ?)",
        )
        .bind(group.name.clone())
        .bind(group.avatar.clone())
        .bind(group.creator.0)
        .bind(group.group_type.to_wire())
        .bind(u32::try_from(group.members.len()).unwrap_or(u32::MAX))
        .bind(now.0)
        .bind(now.0)
        .execute(&self.master)
        .await
        .map_err(db)?;
        let id = GroupId(inserted_id(done.last_insert_id())?);
        let _: () = self
            .unread
            .set(self.keys.group_msg_id(id), "0", None, None, false)
            .await
            .map_err(redis)?;
        sqlx::query("DELETE FROM IMGroupMember WHERE groupId = ?")
            .bind(id.0)
            .execute(&self.master)
            .await
            .map_err(db)?;
        let _: i64 = self
            .group_member
            .del(self.keys.group_member(id))
            .await
            .map_err(redis)?;
        self.insert_members(id, &group.members, now).await?;
        Ok(id)
    }

    async fn group(&self, group: GroupId) -> StoreResult<Option<Group>> {
        let row = sqlx::query(
            "SELECT id, name, avatar, creator, type, version, updated, lastChated FROM IMGroup WHERE id = ?",
        )
        .bind(group.0)
        .fetch_optional(&self.slave)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let Some(group_type) = GroupType::from_wire(u32_col(&row, "type")? as i32) else {
            return Ok(None);
        };
        Ok(Some(Group {
            id: GroupId(u32_col(&row, "id")?),
            name: str_col(&row, "name")?,
            avatar: str_col(&row, "avatar")?,
            creator: UserId(u32_col(&row, "creator")?),
            group_type,
            version: u32_col(&row, "version")?,
            updated: Timestamp(u32_col(&row, "updated")?),
            last_chated: Timestamp(u32_col(&row, "lastChated")?),
        }))
    }

    async fn members(&self, group: GroupId) -> StoreResult<Option<Vec<Member>>> {
        let all: HashMap<String, String> = self
            .group_member
            .hgetall(self.keys.group_member(group))
            .await
            .map_err(redis)?;
        if all.is_empty() {
            return Ok(None);
        }
        let mut members: Vec<Member> = all
            .iter()
            .filter_map(|(user, joined)| {
                Some(Member {
                    user: UserId(user.parse().ok()?),
                    joined: Timestamp(parse_u32(joined)),
                })
            })
            .collect();
        members.sort_unstable();
        Ok(Some(members))
    }

    async fn member(&self, group: GroupId, user: UserId) -> StoreResult<Option<Member>> {
        let joined: Option<String> = self
            .group_member
            .hget(self.keys.group_member(group), user.0.to_string())
            .await
            .map_err(redis)?;
        Ok(joined.map(|j| Member {
            user,
            joined: Timestamp(parse_u32(&j)),
        }))
    }

    async fn add_members(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<Vec<UserId>> {
        if self.group(group).await?.is_none() {
            return Ok(Vec::new());
        }
        let current = self.members(group).await?.unwrap_or_default();
        let new: Vec<UserId> = users
            .iter()
            .filter(|u| !current.iter().any(|m| m.user == **u))
            .copied()
            .collect();
        if !new.is_empty() {
            self.insert_members(group, &new, now).await?;
            self.bump_group(group).await?;
        }
        Ok(new)
    }

    async fn remove_members(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<Vec<UserId>> {
        let current = self.members(group).await?.unwrap_or_default();
        let gone: Vec<UserId> = users
            .iter()
            .filter(|u| current.iter().any(|m| m.user == **u))
            .copied()
            .collect();
        for user in &gone {
            sqlx::query(
                "UPDATE IMGroupMember SET status = 1, updated = ? WHERE groupId = ? AND userId = ?",
            )
            .bind(now.0)
            .bind(group.0)
            .bind(user.0)
            .execute(&self.master)
            .await
            .map_err(db)?;
            let _: i64 = self
                .group_member
                .hdel(self.keys.group_member(group), user.0.to_string())
                .await
                .map_err(redis)?;
        }
        if !gone.is_empty() {
            self.bump_group(group).await?;
        }
        Ok(gone)
    }

    async fn groups_of(&self, user: UserId) -> StoreResult<Vec<GroupId>> {
        let rows = sqlx::query("SELECT groupId FROM IMGroupMember WHERE userId = ? AND status = 0 ORDER BY updated DESC, id DESC")
            .bind(user.0)
            .fetch_all(&self.slave)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| u32_col(r, "groupId").map(GroupId))
            .collect()
    }

    async fn groups_chatted_since(
        &self,
        since: Timestamp,
    ) -> StoreResult<Vec<(GroupId, Timestamp)>> {
        let rows = sqlx::query(
            "SELECT id, lastChated FROM IMGroup WHERE status = 0 AND lastChated >= ? ORDER BY id",
        )
        .bind(since.0)
        .fetch_all(&self.slave)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    GroupId(u32_col(r, "id")?),
                    Timestamp(u32_col(r, "lastChated")?),
                ))
            })
            .collect()
    }
}

impl MysqlRedisStore {
    /// insertNewMember: re-activates existing rows, inserts the others, joins them in Redis.
    async fn insert_members(
        &self,
        group: GroupId,
        users: &[UserId],
        now: Timestamp,
    ) -> StoreResult<()> {
        for user in users {
            let done = sqlx::query(
                "UPDATE IMGroupMember SET status = 0, updated = ? WHERE groupId = ? AND userId = ?",
            )
            .bind(now.0)
            .bind(group.0)
            .bind(user.0)
            .execute(&self.master)
            .await
            .map_err(db)?;
            if done.rows_affected() == 0 {
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(id AS SIGNED) FROM IMGroupMember WHERE groupId = ? AND userId = ? LIMIT 1",
                )
                .bind(group.0)
                .bind(user.0)
                .fetch_optional(&self.master)
                .await
                .map_err(db)?;
                if exists.is_none() {
                    sqlx::query(
                        "INSERT INTO IMGroupMember (groupId, userId, status, created, updated) VALUES (?, ?, 0, ?, ?)",
                    )
                    .bind(group.0)
                    .bind(user.0)
                    .bind(now.0)
                    .bind(now.0)
                    .execute(&self.master)
                    .await
                    .map_err(db)?;
                }
            }
            let _: i64 = self
                .group_member
                .hset(
                    self.keys.group_member(group),
                    (user.0.to_string(), now.0.to_string()),
                )
                .await
                .map_err(redis)?;
        }
        Ok(())
    }

    /// Version +1 and userCnt recomputed after a membership change.
    async fn bump_group(&self, group: GroupId) -> StoreResult<()> {
        sqlx::query(
            "UPDATE IMGroup SET version = version + 1, \
             userCnt = (SELECT COUNT(*) FROM IMGroupMember WHERE groupId = ? AND status = 0) WHERE id = ?",
        )
        .bind(group.0)
        .bind(group.0)
        .execute(&self.master)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait::async_trait]

impl DeviceStore for MysqlRedisStore {
    async fn set_device_token(
        &self,
        user: UserId,
        client_type: Option<ClientType>,
        token: &str,
    ) -> StoreResult<()> {
        let value = match client_type {
            Some(ClientType::Ios) if !token.is_empty() => format!("ios:{token}"),
            Some(ClientType::Android) if !token.is_empty() => format!("android:{token}"),
            _ => token.to_owned(),
        };
        // The user's previous token no longer belongs to them.
        let old: Option<String> = self
            .token
            .get(self.keys.device_of_user(user))
            .await
            .map_err(redis)?;
        if let Some((_, old_token)) = old.as_deref().and_then(|v| v.split_once(':')) {
            if !old_token.is_empty() && old_token != token {
                let _: () = self
                    .token
                    .set(self.keys.device_owner(old_token), "", None, None, false)
                    .await
                    .map_err(redis)?;
            }
        }
        if !token.is_empty() {
            // A token belongs to one user: take it away from its previous owner.
            let owner: Option<String> = self
                .token
                .get(self.keys.device_owner(token))
                .await
                .map_err(redis)?;
            if let Some(previous) = owner
                .as_deref()
                .and_then(|o| o.parse::<u32>().ok())
                .filter(|&p| p != user.0)
            {
                let theirs: Option<String> = self
                    .token
                    .get(self.keys.device_of_user(UserId(previous)))
                    .await
                    .map_err(redis)?;
                if theirs
                    .as_deref()
                    .is_some_and(|v| v.rsplit(':').next() == Some(token))
                {
                    let _: () = self
                        .token
                        .set(
                            self.keys.device_of_user(UserId(previous)),
                            "",
                            None,
                            None,
                            false,
                        )
                        .await
                        .map_err(redis)?;
                }
            }
            let _: () = self
                .token
                .set(
                    self.keys.device_owner(token),
                    user.0.to_string(),
                    None,
                    None,
                    false,
                )
                .await
                .map_err(redis)?;
        }
        let _: () = self
            .token
            .set(self.keys.device_of_user(user), value, None, None, false)
            .await
            .map_err(redis)?;
        Ok(())
    }

    async fn device_tokens(&self, users: &[UserId]) -> StoreResult<Vec<DeviceToken>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = users.iter().map(|u| self.keys.device_of_user(*u)).collect();
        let values: Vec<Option<String>> = self.token.mget(keys).await.map_err(redis)?;
        Ok(users
            .iter()
            .zip(values)
            .filter_map(|(user, value)| {
                let value = value?;
                let (client_type, token) = if let Some(t) = value.strip_prefix("ios:") {
                    (ClientType::Ios, t)
                } else if let Some(t) = value.strip_prefix("android:") {
                    (ClientType::Android, t)
                } else {
                    return None;
                };
                (!token.is_empty()).then(|| DeviceToken {
                    user: *user,
                    client_type,
                    token: token.to_owned(),
                })
            })
            .collect())
    }

    async fn set_group_shield(
        &self,
        group: GroupId,
        user: UserId,
        shielded: bool,
    ) -> StoreResult<()> {
        let value = if shielded { "1" } else { "0" };
        let _: i64 = self
            .group_set
            .hset(
                self.keys.group_set(group),
                (Keys::group_set_field(user), value),
            )
            .await
            .map_err(redis)?;
        Ok(())
    }

    async fn group_shields(&self, group: GroupId, users: &[UserId]) -> StoreResult<Vec<bool>> {
        let all: HashMap<String, String> = self
            .group_set
            .hgetall(self.keys.group_set(group))
            .await
            .map_err(redis)?;
        Ok(users
            .iter()
            .map(|u| {
                all.get(&Keys::group_set_field(*u))
                    .is_some_and(|v| parse_u32(v) != 0)
            })
            .collect())
    }
}

#[async_trait::async_trait]

impl FileStore for MysqlRedisStore {
    async fn offline_files(&self, to: UserId) -> StoreResult<Vec<OfflineFile>> {
        let rows = sqlx::query(
            "SELECT fromId, toId, taskId, fileName, size, created FROM IMTransmitFile \
             WHERE toId = ? AND status = 0 ORDER BY created, id",
        )
        .bind(to.0)
        .fetch_all(&self.slave)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(OfflineFile {
                    from: UserId(u32_col(r, "fromId")?),
                    to: UserId(u32_col(r, "toId")?),
                    task_id: str_col(r, "taskId")?,
                    file_name: str_col(r, "fileName")?,
                    size: u32_col(r, "size")?,
                    created: Timestamp(u32_col(r, "created")?),
                })
            })
            .collect()
    }

    async fn add_offline_file(&self, file: &OfflineFile) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO IMTransmitFile (fromId, toId, fileName, size, taskId, status, created, updated) \
             VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(file.from.0)
        .bind(file.to.0)
        .bind(file.file_name.clone())
        .bind(file.size)
        .bind(file.task_id.clone())
        .bind(file.created.0)
        .bind(file.created.0)
        .execute(&self.master)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn remove_offline_file(
        &self,
        from: UserId,
        to: UserId,
        task_id: &str,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM IMTransmitFile WHERE fromId = ? AND toId = ? AND taskId = ?")
                .bind(from.0)
                .bind(to.0)
                .bind(task_id.to_owned())
                .execute(&self.master)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
