//! Which store a command works on: the embedded SQLite store in the data dir, or MySQL +
//! Redis when the config file names them (`mysql_url` and `redis_url`, or an original
//! dbproxyserver.conf's pools). Commands work on the store through [`Store`] (`Arc<dyn Store>`);
//! only `backup`, which needs the SQLite file itself, opens the typed [`SqliteStore`].

use std::path::PathBuf;
use std::sync::Arc;

use teamtalk_core::store::Store;

use teamtalk_servers::conf::ConfFile;
use teamtalk_servers::db_proxy_conf::DbProxyConf;
use teamtalk_store::{MysqlRedisConfig, MysqlRedisStore, SqliteConfig, SqliteStore};

use crate::cli::Options;
use crate::{run_error, usage, Failure};

/// The serve / administration settings: the config file (if any) and the flags.
pub(crate) struct Settings {
    pub(crate) conf: ConfFile,
    pub(crate) data_dir: PathBuf,
}

/// The settings of `--config` and `--data-dir`: the flag's data dir over the config's
/// `data_dir` over `./teamtalk-data`.
pub(crate) fn settings(opts: &Options) -> Result<Settings, Failure> {
    let conf = match &opts.config {
        Some(path) => ConfFile::load_any(path).map_err(|e| Failure::Usage(usage(e)))?,
        None => ConfFile::default(),
    };
    let data_dir = opts
        .data_dir
        .clone()
        .or_else(|| conf.get("data_dir").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./teamtalk-data"));
    Ok(Settings { conf, data_dir })
}

/// Which backend [`open_store`] opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The embedded SQLite file in the data dir.
    Sqlite,
    /// MySQL + Redis named by the config file.
    MysqlRedis,
}

/// Opens the store of `settings` (MySQL + Redis: creating the original tables when missing),
/// and says which backend it is.
pub(crate) async fn open_store(settings: &Settings) -> Result<(Arc<dyn Store>, Backend), Failure> {
    match mysql_config(settings)? {
        Some(config) => {
            let store = MysqlRedisStore::connect(&config).await.map_err(run_error)?;
            // A fresh database gets the original tables; existing ones are left as they are.
            store.bootstrap().await.map_err(run_error)?;
            Ok((Arc::new(store), Backend::MysqlRedis))
        }
        None => Ok((Arc::new(open_sqlite(settings).await?), Backend::Sqlite)),
    }
}

/// The MySQL + Redis settings of the config file, `None` when it names neither (the embedded
/// store).
pub(crate) fn mysql_config(settings: &Settings) -> Result<Option<MysqlRedisConfig>, Failure> {
    let conf = &settings.conf;
    if conf.get("DBInstances").is_some() {
        // An original dbproxyserver.conf: its MySQL pools and Redis instances.
        let db = DbProxyConf::from_conf(conf).map_err(|e| Failure::Usage(usage(e.to_string())))?;
        return Ok(Some(db.store));
    }
    match (conf.get("mysql_url"), conf.get("redis_url")) {
        (Some(mysql), Some(redis)) => Ok(Some(MysqlRedisConfig::new(mysql, redis))),
        (None, None) => Ok(None),
        _ => Err(usage("mysql_url and redis_url must be set together").into()),
    }
}

/// Opens (creating the data dir and the file when missing) the embedded SQLite store of
/// `settings`, for the operations only it has (such as `backup`).
pub(crate) async fn open_sqlite(settings: &Settings) -> Result<SqliteStore, Failure> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        run_error(format!(
            "cannot create {}: {e}",
            settings.data_dir.display()
        ))
    })?;
    let path = settings.data_dir.join("teamtalk.db");
    SqliteStore::open(&SqliteConfig::new(path))
        .await
        .map_err(run_error)
}
