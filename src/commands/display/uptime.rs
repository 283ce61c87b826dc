//! `display --uptime`: how long each instance has run, as TiUP finds it.

use std::time::{Duration, Instant};

use super::causes;
use crate::dm::client::http_builder;
use crate::topology::Cluster;

/// `--uptime` as TiUP finds it: `process_start_time_seconds` from the instance's Prometheus
/// `/metrics` (DM and the monitoring components all serve it). When it does not answer, the
/// Since column reads `-` (TiUP then asks systemd over SSH; display makes no SSH connection).
#[derive(Clone)]
pub struct Metrics {
    /// For DM instances: TLS when the cluster has it.
    dm: reqwest::Client,
    dm_scheme: &'static str,
    /// For monitoring instances, which serve plain HTTP.
    plain: reqwest::Client,
}

impl Metrics {
    pub fn new(timeout: Duration, cluster: &Cluster, proxy: Option<&str>) -> Metrics {
        let builder = || http_builder(timeout, proxy);
        let mut dm = builder();
        if let Some(tls) = cluster.tls() {
            dm = dm.tls_backend_preconfigured((*tls.config()).clone());
        }
        let build = |b: reqwest::ClientBuilder| {
            b.build().expect("the HTTP client's TLS backend initialises")
        };
        Metrics {
            dm: build(dm),
            dm_scheme: if cluster.tls().is_some() { "https" } else { "http" },
            plain: build(builder()),
        }
    }

    /// How long the process at `addr` has run, as TiUP prints it; `-` when unknown or not
    /// asked for.
    pub async fn since(&self, addr: &str, dm: bool, asked: bool) -> String {
        if !asked {
            return "-".to_owned();
        }
        let (client, scheme) = if dm { (&self.dm, self.dm_scheme) } else { (&self.plain, "http") };
        let url = format!("{scheme}://{addr}/metrics");
        let started = Instant::now();
        let answer = match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => response.text().await.ok(),
            Ok(response) => {
                tracing::debug!("GET {url}: HTTP {}", response.status());
                None
            }
            Err(err) => {
                tracing::debug!("GET {url}: {}", causes(&err));
                None
            }
        };
        let start = answer.as_deref().and_then(process_start_time);
        let uptime = start.and_then(|start| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
            now.checked_sub(Duration::from_secs_f64(start))
        });
        let since = format_since(uptime.unwrap_or_default());
        tracing::info!("GET {url}: since {since} ({} ms)", started.elapsed().as_millis());
        since
    }
}

/// `process_start_time_seconds <float>` in a Prometheus text exposition (TiUP's promRegexp).
fn process_start_time(metrics: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix("process_start_time_seconds")?;
        if !value.starts_with(char::is_whitespace) {
            return None;
        }
        value.split_whitespace().next()?.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
    })
}

/// TiUP's `formatInstanceSince`: `1d2h3m4s` with the zero parts left out; `-` for zero.
fn format_since(uptime: Duration) -> String {
    let total = uptime.as_secs();
    if total == 0 {
        return "-".to_owned();
    }
    let parts = [
        (total / 86_400, 'd'),
        (total / 3600 % 24, 'h'),
        (total / 60 % 60, 'm'),
        (total % 60, 's'),
    ];
    parts
        .iter()
        .filter(|(value, _)| *value > 0)
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_as_tiup_prints_it() {
        assert_eq!(format_since(Duration::ZERO), "-");
        assert_eq!(format_since(Duration::from_secs(59)), "59s");
        assert_eq!(format_since(Duration::from_secs(3600)), "1h");
        assert_eq!(format_since(Duration::from_secs(86_400 + 2 * 3600 + 3 * 60 + 4)), "1d2h3m4s");
    }

    #[test]
    fn process_start_time_is_read_from_metrics() {
        let metrics = "# HELP process_start_time_seconds Start time\n\
                       # TYPE process_start_time_seconds gauge\n\
                       process_start_time_seconds 1.70000000012e+09\n";
        assert_eq!(process_start_time(metrics), Some(1_700_000_000.12));
        assert_eq!(process_start_time("process_start_time_seconds_total 5\n"), None);
        assert_eq!(process_start_time("nothing here"), None);
    }
}
