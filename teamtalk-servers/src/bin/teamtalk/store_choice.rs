//! Which store a command works on: the embedded SQLite store in the data dir, or MySQL +
//! Redis when the config file names them (`mysql_url` and `redis_url`, or an original
//! dbproxyserver.conf's pools). The commands match on [`AnyStore`] where they use it.

use std::path::PathBuf;

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

/// The store a command opened.
pub(crate) enum AnyStore {
    Sqlite(SqliteStore),
    Mysql(MysqlRedisStore),
}

/// Opens the store of `settings` (MySQL + Redis: creating the original tables when missing).
pub(crate) async fn open_store(settings: &Settings) -> Result<AnyStore, Failure> {
    let conf = &settings.conf;
    let mysql = if conf.get("DBInstances").is_some() {
        // An original dbproxyserver.conf: its MySQL pools and Redis instances.
        let db = DbProxyConf::from_conf(conf).map_err(|e| Failure::Usage(usage(e.to_string())))?;
        Some(db.store)
    } else {
        match (conf.get("mysql_url"), conf.get("redis_url")) {
            (Some(mysql), Some(redis)) => Some(MysqlRedisConfig::new(mysql, redis)),
            (None, None) => None,
            _ => return Err(usage("mysql_url and redis_url must be set together").into()),
        }
    };
    if let Some(config) = mysql {
        let store = MysqlRedisStore::connect(&config).await.map_err(run_error)?;
        // A fresh database gets the original tables; existing ones are left as they are.
        store.bootstrap().await.map_err(run_error)?;
        return Ok(AnyStore::Mysql(store));
    }
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        run_error(format!(
            "cannot create {}: {e}",
            settings.data_dir.display()
        ))
    })?;
    let path = settings.data_dir.join("teamtalk.db");
    let store = SqliteStore::open(&SqliteConfig::new(path))
        .await
        .map_err(run_error)?;
    Ok(AnyStore::Sqlite(store))
}
