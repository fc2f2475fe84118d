//! `teamtalk backup FILE`: an online copy of the embedded store's database.

use std::path::Path;

use crate::cli::Options;
use crate::store_choice::{open_store, settings, AnyStore};
use crate::{run_error, usage, Failure};

/// Writes a consistent copy of the embedded store to `file` (which must not exist), taken
/// while the store may be in use; a MySQL + Redis configuration is told to use mysqldump.
pub(crate) async fn run(file: &Path, opts: &Options) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let settings = settings(opts)?;
    let on_mysql = ["DBInstances", "mysql_url"]
        .iter()
        .any(|key| settings.conf.get(key).is_some());
    if on_mysql {
        return Err(usage(
            "backup copies the embedded SQLite store; on MySQL + Redis use mysqldump \
             (and Redis's own persistence)",
        )
        .into());
    }
    match open_store(&settings).await? {
        AnyStore::Sqlite(store) => {
            store.backup_to(file).await.map_err(run_error)?;
            println!(
                "backup written to {} in {:.1} s",
                file.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        AnyStore::Mysql(_) => Err(usage("backup copies the embedded SQLite store").into()),
    }
}
