//! [`Prometheus`]: a real Prometheus server (Debian's `prometheus` 2.42) scraping the test's
//! programs and evaluating alert rules, on a free loopback port in its own temp dir, killed on
//! drop; and a small client for its HTTP API (`/api/v1/query`, `/api/v1/alerts`,
//! `/api/v1/targets`).
//!
//! ```no_run
//! use std::time::Duration;
//! use tributary_tests::{Prometheus, PrometheusSetup};
//! # fn main() -> tributary_tests::Result<()> {
//! let prometheus = Prometheus::start(PrometheusSetup {
//!     targets: vec![("tributary-agent".into(), 9464)],
//!     rule_files: vec![("agent.rules.yml".into(), "groups: []\n".into())],
//!     interval: Duration::from_secs(1),
//! })?;
//! let alerts = prometheus.alerts()?;
//! # Ok(()) }
//! ```

use crate::error::{HarnessError, Result};
use crate::process::delegate_process_methods;
use crate::{ProcessSpec, ServerProcess, bins, free_port, ports::is_listening};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the test's Prometheus scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct PrometheusSetup {
    /// Scrape jobs: `(job name, port on 127.0.0.1)`, one target each, path `/metrics`.
    pub targets: Vec<(String, u16)>,
    /// Rule files: `(file name, contents)`, written into the server's temp dir.
    pub rule_files: Vec<(String, String)>,
    /// Scrape and rule evaluation interval (both).
    pub interval: Duration,
}

/// One alert as `/api/v1/alerts` lists it (pending or firing).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The `alertname` label.
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    /// Every label, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// The annotations, templates expanded (`summary`, `description`).
    pub annotations: BTreeMap<String, String>,
}

impl Alert {
    /// Whether the alert is firing (not just pending).
    pub fn is_firing(&self) -> bool {
        self.state == "firing"
    }
}

/// A `prometheus` process. Killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    process: ServerProcess,
    port: u16,
}

delegate_process_methods!(Prometheus);

impl Prometheus {
    /// Writes `setup` into a temp dir as `prometheus.yml` and the rule files, starts
    /// Prometheus on a free loopback port with its storage there, and waits until
    /// `/-/ready` answers 200.
    pub fn start(setup: PrometheusSetup) -> Result<Self> {
        let binary = bins::prometheus()?;
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("tributary-prometheus-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating temp dir", std::env::temp_dir(), e))?;
        let interval = format!("{}ms", setup.interval.as_millis().max(1));
        let mut config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\nrule_files:\n"
        );
        for (name, contents) in &setup.rule_files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)
                .map_err(|e| HarnessError::io("writing rule file", &path, e))?;
            config.push_str(&format!("  - {}\n", path.display()));
        }
        config.push_str("scrape_configs:\n");
        for (job, target) in &setup.targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| HarnessError::io("writing prometheus config", &config_path, e))?;
        let spec = ProcessSpec::new("prometheus", binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let mut prometheus = Prometheus {
            process: ServerProcess::start(spec, dir)?,
            port,
        };
        prometheus.process.wait_until(READY_TIMEOUT, || {
            if !is_listening(port) {
                return Err(format!("port {port} not accepting"));
            }
            match http_get(port, "/-/ready") {
                Ok((200, _)) => Ok(true),
                Ok((code, body)) => Err(format!("/-/ready answered {code}: {body}")),
                Err(e) => Err(format!("/-/ready: {e}")),
            }
        })?;
        Ok(prometheus)
    }

    /// The HTTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `data` of a successful answer of the HTTP API at `path_and_query`
    /// (such as `/api/v1/alerts`).
    pub fn api(&self, path_and_query: &str) -> Result<Value> {
        let err = |reason: String| HarnessError::Prometheus {
            what: path_and_query.to_owned(),
            reason,
        };
        let (code, body) = http_get(self.port, path_and_query).map_err(|e| err(e.to_string()))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| err(format!("HTTP {code}, not JSON ({e}): {body}")))?;
        if code != 200 || json["status"] != "success" {
            return Err(err(format!("HTTP {code}: {body}")));
        }
        Ok(json["data"].clone())
    }

    /// Evaluates the PromQL `expr` now (`/api/v1/query`) and returns its `result`;
    /// an expression Prometheus refuses is an error carrying Prometheus's reason.
    pub fn query(&self, expr: &str) -> Result<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(expr)))?;
        Ok(data["result"].clone())
    }

    /// The alerts now pending or firing (`/api/v1/alerts`).
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let data = self.api("/api/v1/alerts")?;
        let list = data["alerts"]
            .as_array()
            .ok_or_else(|| HarnessError::Prometheus {
                what: "/api/v1/alerts".into(),
                reason: format!("no alerts array in {data}"),
            })?;
        Ok(list
            .iter()
            .map(|a| {
                let strings = |v: &Value| -> BTreeMap<String, String> {
                    v.as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let labels = strings(&a["labels"]);
                Alert {
                    name: labels.get("alertname").cloned().unwrap_or_default(),
                    state: a["state"].as_str().unwrap_or_default().to_owned(),
                    labels,
                    annotations: strings(&a["annotations"]),
                }
            })
            .collect())
    }

    /// `(job, health)` of every active scrape target, health being `up`, `down` or
    /// `unknown` (not scraped yet).
    pub fn target_health(&self) -> Result<Vec<(String, String)>> {
        let data = self.api("/api/v1/targets?state=active")?;
        Ok(data["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        (
                            t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                            t["health"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The names of the rule groups loaded, with their rule counts (`/api/v1/rules`).
    pub fn rule_groups(&self) -> Result<Vec<(String, usize)>> {
        let data = self.api("/api/v1/rules")?;
        Ok(data["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| {
                        (
                            g["name"].as_str().unwrap_or_default().to_owned(),
                            g["rules"].as_array().map_or(0, Vec::len),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// `GET path` on `127.0.0.1:port` (HTTP/1.0, so the answer is neither chunked nor kept
/// alive): the status code and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// `text` percent-encoded for a URL query value (everything but `A-Za-z0-9-._~`).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_bytes_and_escapes_the_rest() {
        assert_eq!(
            percent_encode(r#"rate(a{b=~"c.+"}[1m]) > 0"#),
            "rate%28a%7Bb%3D~%22c.%2B%22%7D%5B1m%5D%29%20%3E%200"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
