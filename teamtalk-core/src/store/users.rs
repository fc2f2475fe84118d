//! Users and departments.

use core::fmt;

use crate::domain::{DepartmentId, Timestamp, UserId};
use crate::store::StoreResult;

/// IMUser.status of users allowed to log in and listed in a first full sync.
pub const STATUS_ACTIVE: u32 = 0;
/// IMUser.status of resigned (deleted) users: left out of the first full sync, still sent in
/// incremental syncs so clients can hide them.
pub const STATUS_RESIGNED: u32 = 3;

/// A user as clients see it (one IMUser row without its credentials).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct User {
    /// IMUser.id.
    pub id: UserId,
    /// Login name, also the real name (IMUser.name; compared as [`login_name_key`] says).
    pub name: String,
    /// Nickname.
    pub nick: String,
    /// 1 male, 2 female, 0 unknown.
    pub gender: u32,
    /// Avatar URL.
    pub avatar: String,
    /// Department.
    pub department: DepartmentId,
    /// E-mail address.
    pub email: String,
    /// Phone number.
    pub phone: String,
    /// Pinyin of the name.
    pub domain: String,
    /// 0 active (the only status that may log in), 3 resigned, 1/2/4 other HR states.
    pub status: u32,
    /// Personal signature (at most 128 bytes).
    pub sign_info: String,
    /// Do-not-disturb: no iOS push during quiet hours.
    pub push_shield: bool,
    /// Last change; drives incremental sync.
    pub updated: Timestamp,
}

/// Stored password hash and salt (spec/storage.md §4). `Debug` hides both.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// `md5hex(md5hex(plain) ‖ salt)`, lowercase.
    pub password_hash: String,
    /// Decimal salt, 1–4 digits.
    pub salt: String,
}

impl Credentials {
    /// Credentials for the plain password `plain` with `salt`.
    pub fn from_plain(plain: &str, salt: &str) -> Credentials {
        let client = crate::password::client_password(plain);
        Credentials {
            password_hash: crate::password::stored_password(&client, salt),
            salt: salt.to_owned(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// A user to create (provisioning, tests, the admin command line).
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// Profile fields; `id` and `updated` are assigned by the store.
    pub profile: User,
    /// Password hash and salt.
    pub credentials: Credentials,
}

/// Profile fields to change (administration); `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileChange {
    /// Nickname.
    pub nick: Option<String>,
    /// 1 male, 2 female, 0 unknown.
    pub gender: Option<u32>,
    /// Avatar URL.
    pub avatar: Option<String>,
    /// Department.
    pub department: Option<DepartmentId>,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
}

impl ProfileChange {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == ProfileChange::default()
    }
}

/// One IMDepart row.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Department {
    /// IMDepart.id.
    pub id: DepartmentId,
    /// Name.
    pub name: String,
    /// Display priority.
    pub priority: u32,
    /// Parent department (0 for a root).
    pub parent: DepartmentId,
    /// 0 ok, 1 deleted.
    pub status: u32,
    /// Last change; drives incremental sync.
    pub updated: Timestamp,
}

/// A department to create.
#[derive(Clone, Debug, Default)]
pub struct NewDepartment {
    /// Name.
    pub name: String,
    /// Display priority.
    pub priority: u32,
    /// Parent department (0 for a root).
    pub parent: DepartmentId,
}

/// The form under which two login names name the same account: the name without trailing
/// spaces (U+0020 only). This is how the original's IMUser.name column (`utf8mb4_bin`, a
/// PAD SPACE collation) compares: case-sensitive, byte for byte, except that `"bob "` equals
/// `"bob"`. Every backend of teamtalk-store compares names this way (docs/compatibility.md).
pub fn login_name_key(name: &str) -> &str {
    name.trim_end_matches(' ')
}

/// Users, credentials and departments.
///
/// Invariants: user names are compared as [`login_name_key`] says (case-sensitive, trailing
/// spaces ignored); [`UserStore::add_user`] never creates a second user with an equal name,
/// but a database written by the original may hold several, and the lookups then pick the
/// highest id; every `updated` change is at least the `now` passed in, so incremental syncs
/// see it.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync {
    /// The active (status 0) user named `name` (names compared as [`login_name_key`] says),
    /// with credentials. When several rows match, the one with the highest id.
    async fn login_candidate(&self, name: &str) -> StoreResult<Option<(User, Credentials)>>;

    /// The user named `name` (compared as [`login_name_key`] says), any status
    /// (administration: closed accounts too). When several rows match, the one with the
    /// highest id.
    async fn user_named(&self, name: &str) -> StoreResult<Option<User>>;

    /// The users with these ids, any status, in ascending id order; unknown ids are skipped.
    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>>;

    /// Whether a user with this id exists (any status). Users are never deleted (resigning
    /// sets status 3), so a backend may cache positive answers.
    async fn user_exists(&self, user: UserId) -> StoreResult<bool>;

    /// Users changed since `since`: with `since` = 0 every user whose status is not
    /// [`STATUS_RESIGNED`] (first full sync), otherwise every user with `updated >= since`
    /// (any status). Ascending id order.
    async fn users_changed_since(&self, since: Timestamp) -> StoreResult<Vec<User>>;

    /// Departments with `updated > since` and status 0 or 1, ascending id order.
    async fn departments_changed_since(&self, since: Timestamp) -> StoreResult<Vec<Department>>;

    /// Sets the signature of `user` and `updated = now`. `false` when the user does not exist.
    async fn set_sign_info(
        &self,
        user: UserId,
        sign_info: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Sets the do-not-disturb flag of `user` and `updated = now`. `false` when the user does
    /// not exist.
    async fn set_push_shield(
        &self,
        user: UserId,
        shield: bool,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// The do-not-disturb flag of `user`, `None` when the user does not exist.
    async fn push_shield(&self, user: UserId) -> StoreResult<Option<bool>>;

    /// Replaces the password hash and salt of `user` (`updated = now`). `false` when the user
    /// does not exist.
    async fn set_credentials(
        &self,
        user: UserId,
        credentials: &Credentials,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Sets the status of `user` (`updated = now`): [`STATUS_RESIGNED`] closes the account (no
    /// more logins; clients hide the user at their next sync), [`STATUS_ACTIVE`] opens it again.
    /// `false` when the user does not exist.
    async fn set_status(&self, user: UserId, status: u32, now: Timestamp) -> StoreResult<bool>;

    /// Changes the profile fields `change` names (`updated = now`, so clients pick the change
    /// up at their next sync). `false` when the user does not exist.
    async fn update_profile(
        &self,
        user: UserId,
        change: &ProfileChange,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Creates a user (`updated = created = now`) and returns its id. Fails with
    /// [`StoreError::NameTaken`](crate::store::StoreError::NameTaken) when a user of any status
    /// has an equal name ([`login_name_key`]); the check and the insertion are one atomic
    /// step, also against concurrent calls (of this process; for MySQL also of other
    /// teamtalk-rs processes on the same database).
    async fn add_user(&self, user: &NewUser, now: Timestamp) -> StoreResult<UserId>;

    /// Creates a department (status 0, `updated = now`) and returns its id.
    async fn add_department(
        &self,
        department: &NewDepartment,
        now: Timestamp,
    ) -> StoreResult<DepartmentId>;
}
