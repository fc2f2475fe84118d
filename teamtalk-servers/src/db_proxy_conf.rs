//! An original `dbproxyserver.conf` (docs/deploy.md) as db_proxy_server settings, so an
//! existing deployment's file can be used as it is.
//!
//! | original keys | here |
//! |---|---|
//! | `ListenIP` (`;`-separated), `ListenPort` | [`DbProxyConf::listen`] |
//! | `DBInstances` (must name `teamtalk_master` and `teamtalk_slave`); `{pool}_host`, `_port`, `_dbname`, `_username`, `_password`, `_maxconncnt` | MySQL master/slave URLs, pool size |
//! | `CacheInstances`; `{instance}_host`, `_port`, `_db` for `unread`, `group_set`, `token`, `group_member` (`sync` is unused) | Redis instance URLs |
//! | `MsfsSite` | msfs URL: a full `http://` URL, or a host (`127.0.0.1`, the shipped default) or `host:port` taken as `http://` as the original does; a bare host means port 80, which is warned about (docs/compatibility.md) |
//! | `aesKey` | the audio preview text ([`DbProxyConf::business`]) |
//! | `ThreadNum` | ignored: requests run concurrently on the async runtime |

use std::net::SocketAddr;

use bytes::Bytes;
use teamtalk_core::crypt::MessageKey;
use teamtalk_core::service::DbProxyConfig;
use teamtalk_store::mysql::RedisInstances;
use teamtalk_store::MysqlRedisConfig;

use tracing::warn;

use crate::conf::{ConfError, ConfFile};

/// Settings read from a `dbproxyserver.conf`.
#[derive(Clone, Debug)]
pub struct DbProxyConf {
    /// Addresses to listen on for msg_server links.
    pub listen: Vec<SocketAddr>,
    /// The MySQL + Redis store of the deployment.
    pub store: MysqlRedisConfig,
    /// The 32-character message key (`aesKey`).
    pub aes_key: String,
}

impl DbProxyConf {
    /// Reads the settings; every missing or malformed key is reported by name (never with the
    /// value, which may be a password).
    pub fn from_conf(conf: &ConfFile) -> Result<DbProxyConf, ConfError> {
        let port: u16 = conf
            .parsed("ListenPort", "a TCP port")?
            .ok_or(missing("ListenPort"))?;
        let mut listen = Vec::new();
        for ip in conf.addresses("ListenIP") {
            let ip = ip
                .parse()
                .map_err(|_| invalid("ListenIP", "IP addresses separated by ;"))?;
            listen.push(SocketAddr::new(ip, port));
        }
        if listen.is_empty() {
            return Err(missing("ListenIP"));
        }

        let pools = conf.require("DBInstances")?;
        for pool in ["teamtalk_master", "teamtalk_slave"] {
            if !pools.split(',').any(|p| p.trim() == pool) {
                return Err(invalid("DBInstances", "teamtalk_master,teamtalk_slave"));
            }
        }
        let master_url = mysql_url(conf, "teamtalk_master")?;
        let slave_url = mysql_url(conf, "teamtalk_slave")?;
        let max_connections = conf
            .parsed("teamtalk_master_maxconncnt", "a number")?
            .unwrap_or(16);

        let redis = RedisInstances {
            unread: redis_url(conf, "unread")?,
            group_set: redis_url(conf, "group_set")?,
            token: redis_url(conf, "token")?,
            group_member: redis_url(conf, "group_member")?,
        };
        let msfs_url = match conf.get("MsfsSite") {
            None | Some("") => None,
            Some(site) => {
                let site = msfs_site(site)?;
                if let Some(warning) = &site.warning {
                    warn!("{warning}");
                }
                Some(site.url)
            }
        };
        let aes_key = conf.require("aesKey")?.to_owned();
        if aes_key.len() != 32 {
            return Err(invalid("aesKey", "32 characters"));
        }
        let store = MysqlRedisConfig {
            master_url,
            slave_url,
            redis,
            key_prefix: String::new(),
            max_connections,
            msfs_url,
        };
        Ok(DbProxyConf {
            listen,
            store,
            aes_key,
        })
    }
}

impl DbProxyConf {
    /// The db_proxy business settings of this deployment: the audio preview text is
    /// `"[语音]"` encrypted with its `aesKey`, as clients expect.
    pub fn business(&self) -> Result<DbProxyConfig, ConfError> {
        let key = MessageKey::new(&self.aes_key).map_err(|_| invalid("aesKey", "32 characters"))?;
        Ok(DbProxyConfig {
            audio_preview: Bytes::from(key.encrypt("[语音]".as_bytes())),
            ..DbProxyConfig::default()
        })
    }
}

/// The msfs base URL of a `MsfsSite` value, and what an operator should be told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MsfsSite {
    /// The base URL, always ending in `/` (the original appends one).
    url: String,
    /// Set when the value is read in a way the operator may not expect.
    warning: Option<String>,
}

/// Reads a `MsfsSite` value as the original does: a value without a scheme is prefixed with
/// `http://` (the original hands it to curl, which does the same), so the shipped
/// `MsfsSite=127.0.0.1` means `http://127.0.0.1/`: port 80, not msfs's 8700. That is accepted
/// with a warning. Schemes other than `http://` and values that are no URL are refused.
fn msfs_site(value: &str) -> Result<MsfsSite, ConfError> {
    const EXPECTED: &str = "a URL such as http://127.0.0.1:8700/ (or a host, read as http://)";
    let scheme_less = !value.contains("://");
    let full = if scheme_less {
        format!("http://{value}")
    } else {
        value.to_owned()
    };
    let url = url::Url::parse(&full).map_err(|_| invalid("MsfsSite", EXPECTED))?;
    if url.scheme() != "http"
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(invalid("MsfsSite", EXPECTED));
    }
    let warning = (scheme_less && url.port().is_none()).then(|| {
        format!(
            "MsfsSite has no scheme and no port: audio messages go to {url} (port 80 of that \
             host, as with the original), not to msfs's default port 8700; write a full URL \
             such as http://{}:8700/ if that is where msfs listens",
            url.host_str().unwrap_or_default()
        )
    });
    let mut url = String::from(url);
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(MsfsSite { url, warning })
}

fn missing(key: &str) -> ConfError {
    ConfError::Missing {
        key: key.to_owned(),
    }
}

fn invalid(key: &str, expected: &'static str) -> ConfError {
    ConfError::Invalid {
        key: key.to_owned(),
        expected,
    }
}

/// `mysql://user:password@host:port/dbname` from the `{pool}_*` keys, with user and password
/// percent-encoded.
fn mysql_url(conf: &ConfFile, pool: &str) -> Result<String, ConfError> {
    let key = |suffix: &str| format!("{pool}_{suffix}");
    let host = conf.require(&key("host"))?;
    let port: u16 = conf.parsed(&key("port"), "a TCP port")?.unwrap_or(3306);
    let dbname = conf.require(&key("dbname"))?;
    let mut url =
        url::Url::parse("mysql://localhost/").map_err(|_| invalid(&key("host"), "a host"))?;
    url.set_host(Some(host))
        .map_err(|_| invalid(&key("host"), "a host name or address"))?;
    let _ = url.set_port(Some(port));
    url.set_path(dbname);
    url.set_username(conf.get(&key("username")).unwrap_or("root"))
        .map_err(|_| invalid(&key("username"), "a user name"))?;
    let password = conf.get(&key("password")).unwrap_or("");
    if !password.is_empty() {
        url.set_password(Some(password))
            .map_err(|_| invalid(&key("password"), "a password"))?;
    }
    Ok(url.into())
}

/// `redis://host:port/db` from the `{instance}_*` keys.
fn redis_url(conf: &ConfFile, instance: &str) -> Result<String, ConfError> {
    let key = |suffix: &str| format!("{instance}_{suffix}");
    let host = conf.require(&key("host"))?;
    let port: u16 = conf.parsed(&key("port"), "a TCP port")?.unwrap_or(6379);
    let db: u8 = conf.parsed(&key("db"), "a Redis db number")?.unwrap_or(0);
    Ok(format!("redis://{host}:{port}/{db}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The auto_setup dbproxyserver.conf layout (Redis instances on db 1, 2, 4, 5).
    const AUTO_SETUP: &str = "ListenIP=127.0.0.1\nListenPort=10600\nThreadNum=48\n\
        MsfsSite=http://127.0.0.1:8700\naesKey=12345678901234567890123456789012\n\
        DBInstances=teamtalk_master,teamtalk_slave\n\
        teamtalk_master_host=127.0.0.1\nteamtalk_master_port=3306\nteamtalk_master_dbname=teamtalk\n\
        teamtalk_master_username=root\nteamtalk_master_password=p@ss:w/rd#1\nteamtalk_master_maxconncnt=16\n\
        teamtalk_slave_host=10.0.0.2\nteamtalk_slave_port=3307\nteamtalk_slave_dbname=teamtalk\n\
        teamtalk_slave_username=ro\nteamtalk_slave_password=\n\
        CacheInstances=unread,group_set,token,sync,group_member\n\
        unread_host=127.0.0.1\nunread_port=6379\nunread_db=1\n\
        group_set_host=127.0.0.1\ngroup_set_port=6379\ngroup_set_db=2\n\
        token_host=127.0.0.1\ntoken_port=6379\ntoken_db=4\n\
        sync_host=127.0.0.1\nsync_port=6379\nsync_db=3\n\
        group_member_host=127.0.0.1\ngroup_member_port=6379\ngroup_member_db=5\n";

    #[test]
    fn the_shipped_layout_maps_onto_our_settings() {
        let conf = DbProxyConf::from_conf(&ConfFile::parse(AUTO_SETUP)).unwrap();
        assert_eq!(conf.listen, vec!["127.0.0.1:10600".parse().unwrap()]);
        assert_eq!(conf.store.slave_url, "mysql://ro@10.0.0.2:3307/teamtalk");
        let master = url::Url::parse(&conf.store.master_url).unwrap();
        assert_eq!(
            master.password(),
            Some("p%40ss%3Aw%2Frd"),
            "'#' starts a comment; the rest is encoded"
        );
        assert_eq!(conf.store.redis.unread, "redis://127.0.0.1:6379/1");
        assert_eq!(conf.store.redis.group_member, "redis://127.0.0.1:6379/5");
        assert_eq!(
            conf.store.msfs_url.as_deref(),
            Some("http://127.0.0.1:8700/")
        );
        assert_eq!(conf.store.key_prefix, "", "the original key names");
        let business = conf.business().unwrap();
        assert_eq!(
            &business.audio_preview[..],
            teamtalk_core::service::DEFAULT_AUDIO_PREVIEW
        );
        let other_key = AUTO_SETUP.replace(
            "aesKey=12345678901234567890123456789012",
            "aesKey=abcdefghijklmnopqrstuvwxyz012345",
        );
        let other = DbProxyConf::from_conf(&ConfFile::parse(&other_key))
            .unwrap()
            .business()
            .unwrap();
        assert_ne!(
            other.audio_preview, business.audio_preview,
            "the deployment's own key is used"
        );
    }

    #[test]
    fn the_shipped_scheme_less_msfs_site_is_plain_http_on_port_80() {
        let shipped = AUTO_SETUP.replace("MsfsSite=http://127.0.0.1:8700", "MsfsSite=127.0.0.1");
        let conf = DbProxyConf::from_conf(&ConfFile::parse(&shipped)).unwrap();
        assert_eq!(conf.store.msfs_url.as_deref(), Some("http://127.0.0.1/"));
        let url = url::Url::parse(conf.store.msfs_url.as_deref().unwrap()).unwrap();
        assert_eq!(url.port_or_known_default(), Some(80));

        let site = msfs_site("127.0.0.1").unwrap();
        assert_eq!(site.url, "http://127.0.0.1/");
        let warning = site.warning.expect("port 80 is warned about");
        assert!(
            warning.contains("http://127.0.0.1/") && warning.contains("port 80"),
            "{warning}"
        );
        for (value, url) in [
            ("127.0.0.1:8700", "http://127.0.0.1:8700/"),
            ("msfs.example:8700/", "http://msfs.example:8700/"),
            ("http://127.0.0.1:8700", "http://127.0.0.1:8700/"),
            ("http://msfs.example/", "http://msfs.example/"),
        ] {
            assert_eq!(
                msfs_site(value).unwrap(),
                MsfsSite {
                    url: url.to_owned(),
                    warning: None
                },
                "{value}: a port or a scheme was written, nothing to warn about"
            );
        }
    }

    #[test]
    fn bad_values_are_named_without_echoing_them() {
        for bad in [
            "https://127.0.0.1:8700",
            "ftp://127.0.0.1",
            "http://",
            "127.0.0.1:http",
            "two words",
            "http://user@127.0.0.1:8700/",
        ] {
            let conf =
                AUTO_SETUP.replace("MsfsSite=http://127.0.0.1:8700", &format!("MsfsSite={bad}"));
            let err = DbProxyConf::from_conf(&ConfFile::parse(&conf)).unwrap_err();
            assert!(
                matches!(&err, ConfError::Invalid { key, .. } if key == "MsfsSite"),
                "{bad}: {err}"
            );
        }
        let no_pool = AUTO_SETUP.replace("teamtalk_master_host=127.0.0.1\n", "");
        assert_eq!(
            DbProxyConf::from_conf(&ConfFile::parse(&no_pool)).unwrap_err(),
            ConfError::Missing {
                key: "teamtalk_master_host".into()
            }
        );
        let bad_port = AUTO_SETUP.replace("ListenPort=10600", "ListenPort=http");
        let err = DbProxyConf::from_conf(&ConfFile::parse(&bad_port)).unwrap_err();
        assert!(
            !err.to_string().contains("http"),
            "values are not echoed: {err}"
        );
    }
}
