#![doc = include_str!("../README.md")]

pub mod chat;
pub mod conn;
pub mod flood;
pub mod group;
pub mod idle;
pub mod login;
pub mod relay;
pub mod stats;
pub mod traffic;

use std::time::Duration;

pub use conn::Target;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Bad flags or an impossible setup (e.g. not enough users for the rate).
    #[error("{0}")]
    Usage(String),
    /// Connecting or logging in failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The server broke the protocol (or a connection failed mid-run).
    #[error("protocol: {0}")]
    Protocol(String),
}

/// The users a run logs in as: `pattern` with `{}` replaced by `first`, `first + 1`, ….
#[derive(Clone, Debug)]
pub struct Users {
    /// Name pattern, e.g. `u{}`.
    pub pattern: String,
    /// First number.
    pub first: u32,
    /// How many.
    pub count: u32,
    /// Their (common) password.
    pub password: String,
    /// Client type they log in with (default Android: mobile clients are not sent every PC
    /// presence change, so the run measures messaging, not the presence broadcast).
    pub client_type: i32,
}

impl Users {
    /// Name number `i` (0-based).
    pub fn name(&self, i: u32) -> String {
        self.pattern.replace("{}", &(self.first + i).to_string())
    }
}

/// A measurement: named numbers, printed as a table and written as JSON.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The mode.
    pub mode: String,
    /// `(key, value)` in print order.
    pub values: Vec<(String, serde_json::Value)>,
}

impl Report {
    /// An empty report of `mode`.
    pub fn new(mode: &str) -> Report {
        Report {
            mode: mode.to_owned(),
            values: Vec::new(),
        }
    }

    /// Adds a value.
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.values.push((key.to_owned(), value.into()));
    }

    /// A value by key.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A numeric value (0 when absent).
    pub fn number(&self, key: &str) -> f64 {
        self.get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    }

    /// The JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("mode".into(), self.mode.clone().into());
        for (k, v) in &self.values {
            map.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(map)
    }

    /// A readable two-column table.
    pub fn table(&self) -> String {
        let width = self.values.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("teamtalk-bench {}\n", self.mode);
        for (k, v) in &self.values {
            let value = match v {
                serde_json::Value::Number(n) if n.is_f64() => {
                    format!("{:.2}", n.as_f64().unwrap_or(0.0))
                }
                serde_json::Value::Array(items) => format!("({} entries; see --json)", items.len()),
                other => other.to_string(),
            };
            out.push_str(&format!("  {k:<width$}  {value}\n"));
        }
        out
    }
}

/// Rounds to two decimals for reports.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Logs in many users at once, at most `parallel` at a time; sessions in user order.
pub async fn login_all(
    addr: std::net::SocketAddr,
    users: &Users,
    indices: impl IntoIterator<Item = u32>,
    sources: &[std::net::IpAddr],
    parallel: usize,
) -> Result<Vec<conn::Session>, BenchError> {
    let indices: Vec<u32> = indices.into_iter().collect();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(indices.len());
    for (n, i) in indices.iter().enumerate() {
        let name = users.name(*i);
        let password = users.password.clone();
        let source = sources.get(n % sources.len().max(1)).copied();
        let client_type = users.client_type;
        let permit = semaphore.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit.acquire_owned().await;
            conn::login(addr, source, &name, &password, client_type).await
        }));
    }
    let mut sessions = Vec::with_capacity(tasks.len());
    for task in tasks {
        sessions.push(task.await.map_err(|e| BenchError::Setup(e.to_string()))??);
    }
    Ok(sessions)
}

/// How long to wait for the stragglers after the last send.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(3);
