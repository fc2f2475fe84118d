//! The original servers' `.conf` files (`base/ConfigFileReader.cpp`), read so that an existing
//! deployment's configuration can be used as it is (docs/deploy.md).
//!
//! One `key=value` per line; everything after `#` is a comment; spaces and tabs around key and
//! value are trimmed; lines longer than 255 bytes are cut; a key that appears twice keeps its
//! FIRST value; lines without `=` are ignored. Lists of peers use numbered keys
//! (`DBServerIP1`/`DBServerPort1`, `DBServerIP2`/…) read until the first missing number.
//! Unlike the original, a trailing carriage return (a file saved on Windows) is trimmed too.

use std::path::Path;
use std::str::FromStr;

/// Longest line the original reads; the rest of a longer line is cut.
pub const MAX_LINE_BYTES: usize = 255;

/// A problem with a configuration value. Reported with the key, never with a password value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// A required key is absent.
    #[error("missing configuration key {key}")]
    Missing {
        /// The key.
        key: String,
    },
    /// A value does not parse as what the key needs.
    #[error("configuration key {key} has an invalid value ({expected} expected)")]
    Invalid {
        /// The key.
        key: String,
        /// What the value should be.
        expected: &'static str,
    },
}

/// A parsed `.conf` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfFile {
    entries: Vec<(String, String)>,
}

impl ConfFile {
    /// Parses the text of a `.conf` file.
    pub fn parse(text: &str) -> ConfFile {
        let mut entries: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            let line = cut(line, MAX_LINE_BYTES);
            let line = line.split('#').next().unwrap_or("");
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let trim = |s: &str| {
                s.trim_matches(|c| c == ' ' || c == '\t' || c == '\r')
                    .to_owned()
            };
            let (key, value) = (trim(key), trim(value));
            if key.is_empty() || entries.iter().any(|(k, _)| *k == key) {
                continue; // the first value wins
            }
            entries.push((key, value));
        }
        ConfFile { entries }
    }

    /// Reads a TOML file of the same keys (`ListenPort = 8000`, `IpAddr1 = "10.0.0.1"`): a
    /// flat table of strings, integers and booleans. Nested tables and arrays are refused.
    pub fn parse_toml(text: &str) -> Result<ConfFile, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut entries = Vec::new();
        for (key, value) in table {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => u8::from(b).to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => {
                    return Err(format!(
                        "key {key}: only strings, numbers and booleans are allowed"
                    ))
                }
            };
            entries.push((key, value));
        }
        Ok(ConfFile { entries })
    }

    /// Reads a configuration file: TOML when the name ends in `.toml`, otherwise the original
    /// `key=value` format.
    pub fn load_any(path: &Path) -> Result<ConfFile, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        if path.extension().is_some_and(|e| e == "toml") {
            ConfFile::parse_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            Ok(ConfFile::parse(&text))
        }
    }

    /// Reads and parses a `.conf` file (bytes that are not UTF-8 are replaced).
    pub fn load(path: &Path) -> std::io::Result<ConfFile> {
        let bytes = std::fs::read(path)?;
        Ok(ConfFile::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, which must be present.
    pub fn require(&self, key: &str) -> Result<&str, ConfError> {
        self.get(key).ok_or_else(|| ConfError::Missing {
            key: key.to_owned(),
        })
    }

    /// The value of `key` parsed as `T`; `None` when absent.
    pub fn parsed<T: FromStr>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, ConfError> {
        self.get(key)
            .map(|v| {
                v.parse().map_err(|_| ConfError::Invalid {
                    key: key.to_owned(),
                    expected,
                })
            })
            .transpose()
    }

    /// The value of an on/off `key`: `1`/`true` or `0`/`false` (a TOML boolean reads as
    /// `1`/`0`); `default` when absent or empty.
    pub fn switch(&self, key: &str, default: bool) -> Result<bool, ConfError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            Some(_) => Err(ConfError::Invalid {
                key: key.to_owned(),
                expected: "1 (on) or 0 (off)",
            }),
        }
    }

    /// The `;`-separated addresses of a listen-IP key (empty parts dropped).
    pub fn addresses(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Numbered peers `{ip_key}1`/`{port_key}1`, `{ip_key}2`/… until the first missing number.
    pub fn peers(&self, ip_key: &str, port_key: &str) -> Result<Vec<(String, u16)>, ConfError> {
        let mut peers = Vec::new();
        for n in 1.. {
            let (ip, port) = (format!("{ip_key}{n}"), format!("{port_key}{n}"));
            let (Some(host), Some(_)) = (self.get(&ip), self.get(&port)) else {
                break;
            };
            let port: u16 = self.parsed(&port, "a TCP port")?.unwrap_or_default();
            peers.push((host.to_owned(), port));
        }
        Ok(peers)
    }
}

/// The first `max` bytes of `line`, on a character boundary.
fn cut(line: &str, max: usize) -> &str {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DBPROXY: &str = "# dbproxyserver.conf\r\n\
        ListenIP=0.0.0.0\r\n\
        ListenPort =  10600   # the port\r\n\
        \tThreadNum=48\n\
        ListenPort=1\n\
        DBInstances=teamtalk_master,teamtalk_slave\n\
        teamtalk_master_password=12345\n\
        not a setting\n\
        =no key\n";

    #[test]
    fn original_syntax() {
        let conf = ConfFile::parse(DBPROXY);
        assert_eq!(
            conf.get("ListenIP"),
            Some("0.0.0.0"),
            "CR of a Windows file trimmed"
        );
        assert_eq!(
            conf.get("ListenPort"),
            Some("10600"),
            "comment and blanks stripped, first value kept"
        );
        assert_eq!(conf.get("ThreadNum"), Some("48"));
        assert_eq!(conf.parsed::<u16>("ListenPort", "a port"), Ok(Some(10600)));
        assert_eq!(conf.get("not a setting"), None);
        assert_eq!(
            conf.require("Missing"),
            Err(ConfError::Missing {
                key: "Missing".into()
            })
        );
        let err = conf.parsed::<u16>("DBInstances", "a port").unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration key DBInstances has an invalid value (a port expected)"
        );
    }

    #[test]
    fn numbered_peers_and_address_lists() {
        let conf = ConfFile::parse(
            "DBServerIP1=127.0.0.1\nDBServerPort1=10600\nDBServerIP2=10.0.0.2\nDBServerPort2=10601\n\
             DBServerIP4=skipped\nDBServerPort4=1\nListenIP=10.0.0.1; 127.0.0.1;\nBadIP1=x\nBadPort1=99999\n",
        );
        assert_eq!(
            conf.peers("DBServerIP", "DBServerPort").unwrap(),
            vec![
                ("127.0.0.1".to_owned(), 10600),
                ("10.0.0.2".to_owned(), 10601)
            ],
            "read until the first missing number"
        );
        assert_eq!(conf.addresses("ListenIP"), vec!["10.0.0.1", "127.0.0.1"]);
        assert!(conf.peers("BadIP", "BadPort").is_err());
    }

    #[test]
    fn long_lines_are_cut_at_255_bytes() {
        let long = format!("Key={}", "é".repeat(200));
        let conf = ConfFile::parse(&long);
        let value = conf.get("Key").unwrap();
        assert!(value.len() <= MAX_LINE_BYTES - 4 && value.chars().all(|c| c == 'é'));
    }

    #[test]
    fn toml_files_use_the_same_keys() {
        let conf =
            ConfFile::parse_toml("ListenIP = \"0.0.0.0\"\nListenPort = 8000\nDebug = true\n")
                .unwrap();
        assert_eq!(conf.get("ListenPort"), Some("8000"));
        assert_eq!(conf.get("ListenIP"), Some("0.0.0.0"));
        assert_eq!(conf.get("Debug"), Some("1"));
        assert!(ConfFile::parse_toml("[table]\nx = 1\n").is_err());
        assert!(ConfFile::parse_toml("x = ").is_err());
    }
}
