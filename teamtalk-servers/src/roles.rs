//! The original servers' configuration keys (docs/deploy.md) read into
//! each role's settings, from a `.conf` file or a TOML file with the same keys.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::conf::{ConfError, ConfFile};
use crate::login_server::LoginServerConfig;
use crate::msg_server::MsgServerSettings;
use crate::push::PushSettings;

fn invalid(key: &str, expected: &'static str) -> ConfError {
    ConfError::Invalid {
        key: key.to_owned(),
        expected,
    }
}

/// The addresses of `ip_key` (`;`-separated) on the port of `port_key`.
pub fn listen_addrs(
    conf: &ConfFile,
    ip_key: &str,
    port_key: &str,
    default_ip: &str,
    default_port: u16,
) -> Result<Vec<SocketAddr>, ConfError> {
    let port = conf.parsed(port_key, "a TCP port")?.unwrap_or(default_port);
    let mut ips = conf.addresses(ip_key);
    if ips.is_empty() {
        ips.push(default_ip.to_owned());
    }
    ips.iter()
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, port))
                .map_err(|_| invalid(ip_key, "IP addresses separated by ;"))
        })
        .collect()
}

/// Peers named `{ip_key}{n}` / `{port_key}{n}`, resolved (host names allowed, as `localhost`
/// in the shipped files).
pub fn peer_addrs(
    conf: &ConfFile,
    ip_key: &str,
    port_key: &str,
) -> Result<Vec<SocketAddr>, ConfError> {
    let mut out = Vec::new();
    for (host, port) in conf.peers(ip_key, port_key)? {
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| invalid(&format!("{ip_key}…"), "a resolvable host"))?;
        out.push(addr);
    }
    Ok(out)
}

/// route_server: `ListenIP` (127.0.0.1: an internal port, docs/deploy.md "Trust model"),
/// `ListenMsgPort` (8200).
pub fn route_listen(conf: &ConfFile) -> Result<Vec<SocketAddr>, ConfError> {
    listen_addrs(conf, "ListenIP", "ListenMsgPort", "127.0.0.1", 8200)
}

/// The `;`-separated peers allowed on a role's internal port: key `AllowedPeers`
/// (`10.0.0.5;10.0.1.0/24;fd00::/8`, `*` for any). Default: loopback only.
pub fn allowed_peers(conf: &ConfFile) -> Result<crate::trust::AllowedPeers, ConfError> {
    match conf.get("AllowedPeers") {
        None => Ok(crate::trust::AllowedPeers::default()),
        Some(list) => list.parse().map_err(|_| {
            invalid(
                "AllowedPeers",
                "IP addresses or address/prefix blocks separated by ; (or *)",
            )
        }),
    }
}

/// The names of the TLS keys: a role's ([`TlsKeys::ROLE`]) and `teamtalk serve`'s
/// ([`TlsKeys::SERVE`]).
#[derive(Clone, Copy, Debug)]
pub struct TlsKeys {
    /// The deployment's CA (PEM).
    pub ca_file: &'static str,
    /// This role's certificate chain (PEM).
    pub cert_file: &'static str,
    /// This role's private key (PEM).
    pub key_file: &'static str,
    /// The name expected in servers' certificates (default: the dialed IP address).
    pub server_name: &'static str,
}

impl TlsKeys {
    /// `TlsCaFile`, `TlsCertFile`, `TlsKeyFile`, `TlsServerName`.
    pub const ROLE: TlsKeys = TlsKeys {
        ca_file: "TlsCaFile",
        cert_file: "TlsCertFile",
        key_file: "TlsKeyFile",
        server_name: "TlsServerName",
    };
    /// `tls_ca_file`, `tls_cert_file`, `tls_key_file`, `tls_server_name`.
    pub const SERVE: TlsKeys = TlsKeys {
        ca_file: "tls_ca_file",
        cert_file: "tls_cert_file",
        key_file: "tls_key_file",
        server_name: "tls_server_name",
    };
}

/// The role's TLS identity for links between our roles: all of the CA, certificate and key
/// files, or none (plain TCP). With them, the role's internal port accepts only TLS links with
/// a client certificate of the CA, and its dialed links use TLS.
#[cfg(feature = "tls")]
pub fn tls_files(
    conf: &ConfFile,
    keys: &TlsKeys,
) -> Result<Option<crate::tls::TlsFiles>, ConfError> {
    let get = |key: &str| conf.get(key).filter(|v| !v.is_empty());
    let (ca, cert, key) = (get(keys.ca_file), get(keys.cert_file), get(keys.key_file));
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    Ok(Some(crate::tls::TlsFiles {
        ca_file: ca
            .ok_or(ConfError::Missing {
                key: keys.ca_file.to_owned(),
            })?
            .into(),
        cert_file: cert
            .ok_or(ConfError::Missing {
                key: keys.cert_file.to_owned(),
            })?
            .into(),
        key_file: key
            .ok_or(ConfError::Missing {
                key: keys.key_file.to_owned(),
            })?
            .into(),
        server_name: get(keys.server_name).map(str::to_owned),
    }))
}

/// TLS keys in a build without the `tls` feature are an error, not silently ignored.
#[cfg(not(feature = "tls"))]
pub fn tls_files(conf: &ConfFile, keys: &TlsKeys) -> Result<(), ConfError> {
    for key in [keys.ca_file, keys.cert_file, keys.key_file] {
        if conf.get(key).is_some_and(|v| !v.is_empty()) {
            return Err(invalid(
                key,
                "no TLS file: this build has no TLS support (rebuild with --features tls)",
            ));
        }
    }
    Ok(())
}

/// login_server listeners and settings: `HttpListenIP`/`HttpPort` (0.0.0.0:8080, for
/// clients), `MsgServerListenIP`/`MsgServerPort` (127.0.0.1:8100, internal), `msfs`,
/// `discovery`.
pub fn login_server(
    conf: &ConfFile,
) -> Result<(Vec<SocketAddr>, Vec<SocketAddr>, LoginServerConfig), ConfError> {
    let http = listen_addrs(conf, "HttpListenIP", "HttpPort", "0.0.0.0", 8080)?;
    let links = listen_addrs(
        conf,
        "MsgServerListenIP",
        "MsgServerPort",
        "127.0.0.1",
        8100,
    )?;
    let mut config = LoginServerConfig::default();
    if let Some(msfs) = conf.get("msfs") {
        config.msfs = msfs.to_owned();
    }
    if let Some(discovery) = conf.get("discovery") {
        config.discovery = discovery.to_owned();
    }
    Ok((http, links, config))
}

/// msg_server listeners and settings: `ListenIP`/`ListenPort` (8000), `IpAddr1` (required),
/// `IpAddr2`, `MaxConnCnt`, `DBServerIP{n}`/`DBServerPort{n}`, `ConcurrentDBConnCnt`,
/// `LoginServerIP{n}`/`LoginServerPort{n}`, `RouteServerIP{n}`/`RouteServerPort{n}`,
/// `PushServerIP{n}`/`PushServerPort{n}`, `aesKey` (32 characters), and
/// `MaxMsgsPerSecond` (ours, 20), `MaxRequestsInFlight` (ours, 2 per client),
/// `MaxRequestsInFlightTotal` (ours, 4 for all clients) and `RequireLoginServer` (ours, 1;
/// 0 accepts logins without a login_server link).
pub fn msg_server(conf: &ConfFile) -> Result<(Vec<SocketAddr>, MsgServerSettings), ConfError> {
    let listen = listen_addrs(conf, "ListenIP", "ListenPort", "0.0.0.0", 8000)?;
    let mut settings = MsgServerSettings::default();
    let ip1 = conf.require("IpAddr1")?.to_owned();
    settings.core.ip2 = conf.get("IpAddr2").unwrap_or(&ip1).to_owned();
    settings.core.ip1 = ip1;
    settings.core.port = listen.first().map_or(8000, |a| u32::from(a.port()));
    if let Some(max) = conf.parsed("MaxConnCnt", "a number")? {
        settings.core.max_conn_cnt = max;
    }
    if let Some(rate) = conf.parsed("MaxMsgsPerSecond", "a number")? {
        settings.core.max_msgs_per_sec = rate;
    }
    if let Some(max) = conf.parsed("MaxRequestsInFlight", "a number")? {
        settings.core.max_requests_in_flight = max;
    }
    if let Some(max) = conf.parsed("MaxRequestsInFlightTotal", "a number")? {
        settings.core.max_requests_in_flight_total = max;
    }
    settings.core.require_login_server = conf.switch("RequireLoginServer", true)?;
    settings.core.host_name = crate::serve::host_name();
    settings.db_servers = peer_addrs(conf, "DBServerIP", "DBServerPort")?;
    if settings.db_servers.is_empty() {
        return Err(ConfError::Missing {
            key: "DBServerIP1".to_owned(),
        });
    }
    settings.db_connections = conf
        .parsed("ConcurrentDBConnCnt", "a number")?
        .unwrap_or(10);
    settings.login_servers = peer_addrs(conf, "LoginServerIP", "LoginServerPort")?;
    settings.route_servers = peer_addrs(conf, "RouteServerIP", "RouteServerPort")?;
    settings.push_servers = peer_addrs(conf, "PushServerIP", "PushServerPort")?;
    settings.file_servers = peer_addrs(conf, "FileServerIP", "FileServerPort")?;
    if let Some(key) = conf.get("aesKey") {
        if key.len() != 32 {
            return Err(invalid("aesKey", "32 characters"));
        }
        settings.core.aes_key = key.to_owned();
    }
    Ok((listen, settings))
}

/// The connection limits of one role's listeners: `MaxConnCnt` (connections held at once per
/// listening port), `MaxConnPerIp` (from one address), `ListenBacklog`, and for HTTP roles
/// `HttpHeaderTimeout` / `HttpIdleTimeout` (seconds), each over `defaults`.
pub fn listen_config(
    conf: &ConfFile,
    defaults: crate::limits::ListenConfig,
) -> Result<crate::limits::ListenConfig, ConfError> {
    let mut config = defaults;
    if let Some(max) = conf.parsed("MaxConnCnt", "a number")? {
        config.limits.max_total = max;
    }
    if let Some(max) = conf.parsed("MaxConnPerIp", "a number (0: no cap)")? {
        config.limits.max_per_source = max;
    }
    if let Some(backlog) = conf.parsed::<u32>("ListenBacklog", "a number")? {
        config.backlog = backlog.max(1);
    }
    let seconds = |key: &str| -> Result<Option<std::time::Duration>, ConfError> {
        match conf.parsed::<u64>(key, "seconds (at least 1)")? {
            Some(0) => Err(invalid(key, "seconds (at least 1)")),
            other => Ok(other.map(std::time::Duration::from_secs)),
        }
    };
    if let Some(header) = seconds("HttpHeaderTimeout")? {
        config.http.header = header;
    }
    if let Some(idle) = seconds("HttpIdleTimeout")? {
        config.http.idle = idle;
    }
    Ok(config)
}

/// db_proxy_server shell settings: `StopLingerMs` (ours, 4000: how long links stay open
/// after the stop notice on shutdown).
pub fn db_proxy_server(conf: &ConfFile) -> Result<crate::db_proxy::DbProxyServerConfig, ConfError> {
    let mut config = crate::db_proxy::DbProxyServerConfig::default();
    if let Some(ms) = conf.parsed::<u64>("StopLingerMs", "a number of milliseconds")? {
        config.stop_linger = Duration::from_millis(ms);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limit_keys_override_the_defaults() {
        let conf = ConfFile::parse(
            "MaxConnCnt=50\nMaxConnPerIp=3\nListenBacklog=4096\nHttpHeaderTimeout=2\nHttpIdleTimeout=7\n",
        );
        let c = listen_config(&conf, crate::limits::ListenConfig::capped(1000, 0)).unwrap();
        assert_eq!((c.limits.max_total, c.limits.max_per_source), (50, 3));
        assert_eq!(c.backlog, 4096);
        assert_eq!(c.http.header, std::time::Duration::from_secs(2));
        assert_eq!(c.http.idle, std::time::Duration::from_secs(7));
        let defaults = listen_config(
            &ConfFile::parse(""),
            crate::limits::ListenConfig::capped(9, 1),
        )
        .unwrap();
        assert_eq!(defaults, crate::limits::ListenConfig::capped(9, 1));
        assert!(
            listen_config(&ConfFile::parse("HttpIdleTimeout=0\n"), Default::default()).is_err()
        );
        assert!(
            listen_config(&ConfFile::parse("MaxConnPerIp=many\n"), Default::default()).is_err()
        );
    }

    #[test]
    fn budget_and_linger_keys() {
        let conf = ConfFile::parse(
            "IpAddr1=10.0.0.5\nDBServerIP1=127.0.0.1\nDBServerPort1=10600\n\
             MaxRequestsInFlight=4\nMaxRequestsInFlightTotal=64\nStopLingerMs=1500\n",
        );
        let (_, s) = msg_server(&conf).unwrap();
        assert_eq!(
            (
                s.core.max_requests_in_flight,
                s.core.max_requests_in_flight_total
            ),
            (4, 64)
        );
        let db = db_proxy_server(&conf).unwrap();
        assert_eq!(db.stop_linger, Duration::from_millis(1500));
        assert!(s.core.require_login_server, "as the original by default");
        let without = |value: &str| {
            let text = format!(
                "IpAddr1=10.0.0.5\nDBServerIP1=127.0.0.1\nDBServerPort1=10600\nRequireLoginServer={value}\n"
            );
            msg_server(&ConfFile::parse(&text)).map(|(_, s)| s.core.require_login_server)
        };
        assert!(!without("0").unwrap());
        assert!(without("1").unwrap());
        assert!(matches!(without("maybe"), Err(ConfError::Invalid { .. })));
        let toml = ConfFile::parse_toml(
            "IpAddr1 = \"10.0.0.5\"\nDBServerIP1 = \"127.0.0.1\"\nDBServerPort1 = 10600\nRequireLoginServer = false\n",
        )
        .unwrap();
        assert!(!msg_server(&toml).unwrap().1.core.require_login_server);
        let defaults = db_proxy_server(&ConfFile::parse("")).unwrap();
        assert_eq!(defaults.stop_linger, Duration::from_secs(4));
        assert!(db_proxy_server(&ConfFile::parse("StopLingerMs=soon\n")).is_err());
    }

    #[test]
    fn an_original_msgserver_conf() {
        let conf = ConfFile::parse(
            "ListenIP=0.0.0.0\nListenPort=8000\nIpAddr1=10.0.0.5 # telecom\nMaxConnCnt=100\n\
             DBServerIP1=127.0.0.1\nDBServerPort1=10600\nDBServerIP2=127.0.0.1\nDBServerPort2=10600\n\
             ConcurrentDBConnCnt=2\nLoginServerIP1=localhost\nLoginServerPort1=8100\n\
             RouteServerIP1=127.0.0.1\nRouteServerPort1=8200\naesKey=12345678901234567890123456789012\n",
        );
        let (listen, s) = msg_server(&conf).unwrap();
        assert_eq!(listen, vec!["0.0.0.0:8000".parse().unwrap()]);
        assert_eq!(
            (s.core.ip1.as_str(), s.core.ip2.as_str()),
            ("10.0.0.5", "10.0.0.5")
        );
        assert_eq!((s.db_servers.len(), s.db_connections), (2, 2));
        assert_eq!(s.login_servers[0].port(), 8100);
        assert_eq!(s.core.max_conn_cnt, 100);
        let bad = ConfFile::parse("IpAddr1=x\nListenPort=eighty\nDBServerIP1=a\nDBServerPort1=1\n");
        assert!(matches!(msg_server(&bad), Err(ConfError::Invalid { .. })));
        assert!(matches!(
            msg_server(&ConfFile::parse("")),
            Err(ConfError::Missing { .. })
        ));
    }

    #[test]
    fn internal_ports_listen_on_loopback_by_default() {
        let empty = ConfFile::parse("");
        let (http, links, _) = login_server(&empty).unwrap();
        assert_eq!(http, vec!["0.0.0.0:8080".parse().unwrap()], "clients' port");
        assert_eq!(links, vec!["127.0.0.1:8100".parse().unwrap()]);
        assert_eq!(
            route_listen(&empty).unwrap(),
            vec!["127.0.0.1:8200".parse().unwrap()]
        );
        let with_key = ConfFile::parse("AllowedPeers=10.0.0.5;10.0.1.0/24\n");
        let peers = allowed_peers(&with_key).unwrap();
        assert!(peers.allows("10.0.1.7".parse().unwrap()));
        assert!(!peers.allows("127.0.0.1".parse().unwrap()));
        let default = allowed_peers(&empty).unwrap();
        assert!(default.allows("127.0.0.1".parse().unwrap()));
        assert!(!default.allows("10.0.0.5".parse().unwrap()));
        assert!(matches!(
            allowed_peers(&ConfFile::parse("AllowedPeers=10.0.0.0/33\n")),
            Err(ConfError::Invalid { .. })
        ));
    }

    #[test]
    fn tls_keys_all_or_none() {
        let none = ConfFile::parse("");
        #[cfg(feature = "tls")]
        assert_eq!(tls_files(&none, &TlsKeys::ROLE), Ok(None));
        #[cfg(not(feature = "tls"))]
        assert_eq!(tls_files(&none, &TlsKeys::ROLE), Ok(()));
        let all = ConfFile::parse("TlsCaFile=ca.pem\nTlsCertFile=node.pem\nTlsKeyFile=node.key\n");
        #[cfg(feature = "tls")]
        {
            let files = tls_files(&all, &TlsKeys::ROLE).unwrap().unwrap();
            assert_eq!(files.key_file, std::path::PathBuf::from("node.key"));
            let partial = ConfFile::parse("TlsCaFile=ca.pem\n");
            assert_eq!(
                tls_files(&partial, &TlsKeys::ROLE).unwrap_err(),
                ConfError::Missing {
                    key: "TlsCertFile".into()
                }
            );
        }
        #[cfg(not(feature = "tls"))]
        assert!(
            matches!(
                tls_files(&all, &TlsKeys::ROLE),
                Err(ConfError::Invalid { .. })
            ),
            "TLS keys in a build without TLS are refused"
        );
    }

    #[test]
    fn login_and_route_defaults() {
        let (http, links, config) =
            login_server(&ConfFile::parse("msfs=http://m:8700/\n")).unwrap();
        assert_eq!((http[0].port(), links[0].port()), (8080, 8100));
        assert_eq!(config.msfs, "http://m:8700/");
        assert_eq!(
            route_listen(&ConfFile::parse("ListenIP=127.0.0.1;127.0.0.2\n"))
                .unwrap()
                .len(),
            2
        );
    }
}

/// The names of the push backend keys: the push-server role's ([`PushKeys::ROLE`]) and
/// `teamtalk serve`'s ([`PushKeys::SERVE`]).
#[derive(Clone, Copy, Debug)]
pub struct PushKeys {
    /// The webhook URL.
    pub webhook: &'static str,
    /// The APNs `.p8` key file; the other APNs keys are required with it.
    pub apns_key_file: &'static str,
    /// The key id.
    pub apns_key_id: &'static str,
    /// The team id.
    pub apns_team_id: &'static str,
    /// The app's bundle id.
    pub apns_topic: &'static str,
    /// 1: Apple's development endpoint; 0: production (the original's `SandBox`).
    pub apns_sandbox: &'static str,
    /// `https://host[:port]` overriding the endpoint.
    pub apns_endpoint: &'static str,
    /// Extra trusted certificate authorities (PEM).
    pub apns_ca_file: &'static str,
}

impl PushKeys {
    /// The push-server role's keys (`WebhookUrl`, `ApnsKeyFile`, …, the original's `SandBox`).
    pub const ROLE: PushKeys = PushKeys {
        webhook: "WebhookUrl",
        apns_key_file: "ApnsKeyFile",
        apns_key_id: "ApnsKeyId",
        apns_team_id: "ApnsTeamId",
        apns_topic: "ApnsTopic",
        apns_sandbox: "SandBox",
        apns_endpoint: "ApnsEndpoint",
        apns_ca_file: "ApnsCaFile",
    };
    /// `teamtalk serve`'s keys (`push_webhook`, `apns_key_file`, …).
    pub const SERVE: PushKeys = PushKeys {
        webhook: "push_webhook",
        apns_key_file: "apns_key_file",
        apns_key_id: "apns_key_id",
        apns_team_id: "apns_team_id",
        apns_topic: "apns_topic",
        apns_sandbox: "apns_sandbox",
        apns_endpoint: "apns_endpoint",
        apns_ca_file: "apns_ca_file",
    };
}

/// The push backends named by `keys` (none configured: [`PushSettings::is_empty`]). APNs keys
/// in a build without the `apns` feature are an error, not silently ignored.
pub fn push_settings(conf: &ConfFile, keys: &PushKeys) -> Result<PushSettings, ConfError> {
    let webhook_url = conf
        .get(keys.webhook)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    if let Some(url) = &webhook_url {
        if crate::push::WebhookBackend::new(url).is_err() {
            return Err(invalid(keys.webhook, "an http://host[:port]/path URL"));
        }
    }
    let key_file = conf.get(keys.apns_key_file).filter(|f| !f.is_empty());
    #[cfg(not(feature = "apns"))]
    {
        if key_file.is_none() {
            return Ok(PushSettings { webhook_url });
        }
        Err(invalid(
            keys.apns_key_file,
            "no APNs key: this build has no APNs support (rebuild with --features apns)",
        ))
    }
    #[cfg(feature = "apns")]
    {
        let Some(key_file) = key_file else {
            return Ok(PushSettings {
                webhook_url,
                apns: None,
            });
        };
        let sandbox = match conf.get(keys.apns_sandbox).unwrap_or("0") {
            "1" | "true" => true,
            "0" | "false" | "" => false,
            _ => return Err(invalid(keys.apns_sandbox, "1 (sandbox) or 0 (production)")),
        };
        let mut apns = crate::push::apns::ApnsConfig::new(
            key_file,
            conf.require(keys.apns_key_id)?,
            conf.require(keys.apns_team_id)?,
            conf.require(keys.apns_topic)?,
            sandbox,
        );
        if let Some(endpoint) = conf.get(keys.apns_endpoint).filter(|e| !e.is_empty()) {
            apns.endpoint = endpoint.to_owned();
        }
        apns.ca_file = conf
            .get(keys.apns_ca_file)
            .filter(|f| !f.is_empty())
            .map(std::path::PathBuf::from);
        Ok(PushSettings {
            webhook_url,
            apns: Some(apns),
        })
    }
}

/// push-server: `ListenIP` / `ListenPort` (127.0.0.1:8500) and its backends
/// ([`PushKeys::ROLE`]); at least one backend is required.
pub fn push_server(conf: &ConfFile) -> Result<(Vec<SocketAddr>, PushSettings), ConfError> {
    let listen = listen_addrs(conf, "ListenIP", "ListenPort", "127.0.0.1", 8500)?;
    let settings = push_settings(conf, &PushKeys::ROLE)?;
    if settings.is_empty() {
        return Err(ConfError::Missing {
            key: format!(
                "{} or {}",
                PushKeys::ROLE.webhook,
                PushKeys::ROLE.apns_key_file
            ),
        });
    }
    Ok((listen, settings))
}
