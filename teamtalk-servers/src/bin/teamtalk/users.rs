//! `teamtalk user …` and `teamtalk dept …`: accounts and departments on the store that
//! `teamtalk serve` uses (the embedded SQLite file, or MySQL + Redis).

use teamtalk_core::domain::{Clock, DepartmentId, Timestamp, UserId};
use teamtalk_core::store::{
    login_name_key, Credentials, NewDepartment, NewUser, ProfileChange, StoreError, User,
    UserStore, STATUS_ACTIVE, STATUS_RESIGNED,
};
use teamtalk_servers::clock::SystemClock;

use crate::cli::{DeptCommand, Options, ProfileArgs, UserCommand};
use crate::store_choice::{open_store, settings, AnyStore};
use crate::{run_error, usage, Failure};

/// What `user passwd|disable|enable|set` does.
enum UserChange {
    Password(String),
    Status(u32),
    Profile(ProfileChange),
}

impl From<ProfileArgs> for ProfileChange {
    fn from(args: ProfileArgs) -> ProfileChange {
        ProfileChange {
            nick: args.nick,
            gender: args.gender,
            avatar: args.avatar,
            department: args.dept.map(DepartmentId),
            email: args.email,
            phone: args.phone,
        }
    }
}

/// Runs a `teamtalk user …` command.
pub(crate) async fn user(command: UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Add {
            name,
            password,
            nick,
            dept,
            opts,
        } => {
            let store = open_store(&settings(&opts)?).await?;
            let user = NewUser {
                profile: User {
                    nick: nick.unwrap_or_else(|| name.clone()),
                    name,
                    department: DepartmentId(dept),
                    ..User::default()
                },
                credentials: Credentials::from_plain(&password, &random_salt()?),
            };
            let id = match &store {
                AnyStore::Sqlite(s) => s.add_user(&user, SystemClock.now()).await,
                AnyStore::Mysql(s) => s.add_user(&user, SystemClock.now()).await,
            }
            .map_err(add_error)?;
            println!("user {} added with id {}", user.profile.name, id.0);
            Ok(())
        }
        UserCommand::AddMany {
            prefix,
            first,
            count,
            password,
            dept,
            opts,
        } => {
            let store = open_store(&settings(&opts)?).await?;
            let started = std::time::Instant::now();
            let added = match store {
                AnyStore::Sqlite(s) => add_many(s, &prefix, first, count, &password, dept).await,
                AnyStore::Mysql(s) => add_many(s, &prefix, first, count, &password, dept).await,
            }?;
            println!(
                "{} users added ({prefix}{first} … {prefix}{}) in {:.1} s",
                added.added,
                u64::from(first) + u64::from(count.max(1)) - 1,
                started.elapsed().as_secs_f64()
            );
            if let Some((name, id)) = &added.first_taken {
                println!(
                    "{} names already taken, skipped (e.g. {name:?}, id {}): one account per \
                     login name",
                    added.taken, id.0
                );
            }
            Ok(())
        }
        UserCommand::List { all, opts } => {
            let store = open_store(&settings(&opts)?).await?;
            let users = match &store {
                AnyStore::Sqlite(s) => list_users(s, all).await,
                AnyStore::Mysql(s) => list_users(s, all).await,
            }
            .map_err(run_error)?;
            let every = match &store {
                AnyStore::Sqlite(s) => list_users(s, true).await,
                AnyStore::Mysql(s) => list_users(s, true).await,
            }
            .map_err(run_error)?;
            let shared = shared_names(&every);
            println!(
                "{:>8}  {:<20}  {:<20}  {:>6}  status",
                "id", "name", "nick", "dept"
            );
            for user in users {
                let status = if user.status == STATUS_RESIGNED {
                    "disabled"
                } else {
                    "active"
                };
                let flag = match shared.get(login_name_key(&user.name)) {
                    Some(Some(chosen)) => format!("  DUPLICATE NAME: logins use id {}", chosen.0),
                    Some(None) => "  DUPLICATE NAME: no active account".to_owned(),
                    None => String::new(),
                };
                println!(
                    "{:>8}  {:<20}  {:<20}  {:>6}  {status}{flag}",
                    user.id.0, user.name, user.nick, user.department.0
                );
            }
            if !shared.is_empty() {
                eprintln!(
                    "warning: {} login names belong to several accounts (stored by an older \
                     tool): a login uses the highest active id of the name; disable the others \
                     (teamtalk user disable works on the highest id, so fix older ones in the \
                     database) — see docs/compatibility.md",
                    shared.len()
                );
            }
            Ok(())
        }
        UserCommand::Passwd {
            name,
            password,
            opts,
        } => change(name, UserChange::Password(password), &opts).await,
        UserCommand::Disable { name, opts } => {
            change(name, UserChange::Status(STATUS_RESIGNED), &opts).await
        }
        UserCommand::Enable { name, opts } => {
            change(name, UserChange::Status(STATUS_ACTIVE), &opts).await
        }
        UserCommand::Set {
            name,
            profile,
            opts,
        } => change(name, UserChange::Profile(profile.into()), &opts).await,
    }
}

/// `user passwd|disable|enable|set NAME`: applies `change` to the user, says what was done.
async fn change(name: String, change: UserChange, opts: &Options) -> Result<(), Failure> {
    let store = open_store(&settings(opts)?).await?;
    let done = match &store {
        AnyStore::Sqlite(s) => change_user(s, &name, &change).await,
        AnyStore::Mysql(s) => change_user(s, &name, &change).await,
    }?;
    println!("{done}");
    Ok(())
}

/// Runs a `teamtalk dept …` command.
pub(crate) async fn dept(command: DeptCommand) -> Result<(), Failure> {
    match command {
        DeptCommand::Add { name, parent, opts } => {
            let store = open_store(&settings(&opts)?).await?;
            let dept = NewDepartment {
                name,
                priority: 0,
                parent: DepartmentId(parent),
            };
            let id = match &store {
                AnyStore::Sqlite(s) => s.add_department(&dept, SystemClock.now()).await,
                AnyStore::Mysql(s) => s.add_department(&dept, SystemClock.now()).await,
            }
            .map_err(run_error)?;
            println!("department {} added with id {}", dept.name, id.0);
            Ok(())
        }
        DeptCommand::List { opts } => {
            let store = open_store(&settings(&opts)?).await?;
            let departments = match &store {
                AnyStore::Sqlite(s) => s.departments_changed_since(Timestamp(0)).await,
                AnyStore::Mysql(s) => s.departments_changed_since(Timestamp(0)).await,
            }
            .map_err(run_error)?;
            println!("{:>8}  {:<30}  {:>6}", "id", "name", "parent");
            for dept in departments.iter().filter(|d| d.status == 0) {
                println!("{:>8}  {:<30}  {:>6}", dept.id.0, dept.name, dept.parent.0);
            }
            Ok(())
        }
    }
}

/// The users of a first full sync (every account not disabled); with `all` the disabled ones
/// too (those changed at any time since the epoch: every account this tool or the original
/// admin closed).
async fn list_users<S: UserStore>(
    store: &S,
    all: bool,
) -> teamtalk_core::store::StoreResult<Vec<User>> {
    let mut users = store.users_changed_since(Timestamp(0)).await?;
    if all {
        let closed = store.users_changed_since(Timestamp(1)).await?;
        users.extend(closed.into_iter().filter(|u| u.status == STATUS_RESIGNED));
        users.sort_by_key(|u| u.id.0);
    }
    Ok(users)
}

/// Login names (as [`login_name_key`]) held by more than one account, each with the account a
/// login picks: the highest active id, `None` when none is active.
fn shared_names(users: &[User]) -> std::collections::BTreeMap<&str, Option<UserId>> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&User>> = Default::default();
    for user in users {
        by_name
            .entry(login_name_key(&user.name))
            .or_default()
            .push(user);
    }
    by_name
        .into_iter()
        .filter(|(_, accounts)| accounts.len() > 1)
        .map(|(name, accounts)| {
            let chosen = accounts
                .iter()
                .filter(|u| u.status == STATUS_ACTIVE)
                .map(|u| u.id)
                .max();
            (name, chosen)
        })
        .collect()
}

/// A failed user creation: a taken name is the operator's mistake (exit 64), with the account
/// that has it; anything else a run failure.
fn add_error(error: StoreError) -> Failure {
    match error {
        StoreError::NameTaken { name, existing } => Failure::Usage(usage(format!(
            "a user named {name:?} already exists (id {}); login names must be unique (names \
             that differ only by trailing spaces are the same name)",
            existing.0
        ))),
        other => run_error(other),
    }
}

/// Applies `change` to the user named `name` (any status); says what was done.
async fn change_user<S: UserStore>(
    store: &S,
    name: &str,
    change: &UserChange,
) -> Result<String, Failure> {
    let user = store
        .user_named(name)
        .await
        .map_err(run_error)?
        .ok_or_else(|| usage(format!("no user named {name:?}")))?;
    let now = SystemClock.now();
    let (changed, done) = match change {
        UserChange::Password(password) => {
            let credentials = Credentials::from_plain(password, &random_salt()?);
            let changed = store.set_credentials(user.id, &credentials, now).await;
            (changed, format!("password of {name} changed"))
        }
        UserChange::Profile(profile) => {
            let changed = store.update_profile(user.id, profile, now).await;
            (
                changed,
                format!("profile of {name} changed; clients see it at their next sync"),
            )
        }
        UserChange::Status(status) => {
            let changed = store.set_status(user.id, *status, now).await;
            let done = if *status == STATUS_RESIGNED {
                format!(
                    "{name} (id {}) disabled: no more logins; clients hide the user at their \
                     next sync. Connections already open stay until they close: to cut them \
                     now, POST {{\"user_id\":{}}} to http_msg_server's /query/KickUser",
                    user.id.0, user.id.0
                )
            } else {
                format!("{name} enabled")
            };
            (changed, done)
        }
    };
    if changed.map_err(run_error)? {
        Ok(done)
    } else {
        Err(run_error(format!(
            "user {name:?} vanished while being changed"
        )))
    }
}

/// What `user add-many` did.
struct AddedMany {
    added: u32,
    taken: u32,
    /// The first name found taken, with the account that has it.
    first_taken: Option<(String, UserId)>,
}

/// Creates `prefix{first}` … with up to 64 insertions in flight (the stores batch them); names
/// already taken are skipped and counted (so a run can be repeated after a partial one).
async fn add_many<S: UserStore + Clone + 'static>(
    store: S,
    prefix: &str,
    first: u32,
    count: u32,
    password: &str,
    dept: u32,
) -> Result<AddedMany, Failure> {
    let mut tasks: tokio::task::JoinSet<teamtalk_core::store::StoreResult<UserId>> =
        tokio::task::JoinSet::new();
    let mut done = AddedMany {
        added: 0,
        taken: 0,
        first_taken: None,
    };
    let settle = |done: &mut AddedMany, joined: Result<_, tokio::task::JoinError>| {
        match joined.map_err(run_error)? {
            Ok(_) => done.added += 1,
            Err(StoreError::NameTaken { name, existing }) => {
                done.taken += 1;
                done.first_taken.get_or_insert((name, existing));
            }
            Err(other) => return Err(run_error(other)),
        }
        Ok::<(), Failure>(())
    };
    for n in 0..count {
        let Some(number) = first.checked_add(n) else {
            return Err(usage("--first + --count overflows").into());
        };
        if tasks.len() >= 64 {
            if let Some(joined) = tasks.join_next().await {
                settle(&mut done, joined)?;
            }
        }
        let name = format!("{prefix}{number}");
        let user = NewUser {
            profile: User {
                nick: name.clone(),
                name,
                department: DepartmentId(dept),
                ..User::default()
            },
            credentials: Credentials::from_plain(password, &random_salt()?),
        };
        let store = store.clone();
        tasks.spawn(async move { store.add_user(&user, SystemClock.now()).await });
    }
    while let Some(joined) = tasks.join_next().await {
        settle(&mut done, joined)?;
    }
    Ok(done)
}

/// A salt as the original's (a decimal number below 10000), from the operating system's
/// random source.
fn random_salt() -> Result<String, Failure> {
    teamtalk_servers::secret::salt(teamtalk_servers::secret::os_fill).map_err(run_error)
}
