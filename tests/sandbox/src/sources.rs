//! Creating upstream sources and migration tasks, as `dmctl operate-source create` and
//! `dmctl start-task` do, through DM's OpenAPI.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::json;

use crate::task_api::CreateTaskRequest;
use crate::topology::Instance;
use crate::wait;

const CREATE_TIMEOUT: Duration = Duration::from_secs(15);

/// `mysql-replica-01`, `mysql-replica-02`, ...
pub fn source_name(index: usize) -> String {
    format!("mysql-replica-{:02}", index + 1)
}

/// `task-1`, `task-2`, ...
pub fn task_name(index: usize) -> String {
    format!("task-{}", index + 1)
}

/// Creates `count` tasks, each replicating from all of the first `sources` sources, through
/// `POST /api/v1/tasks` on any master.
pub fn create_tasks(
    client: &reqwest::blocking::Client,
    masters: &[&Instance],
    tls: bool,
    count: usize,
    sources: usize,
) -> Result<()> {
    let sources: Vec<String> = (0..sources).map(source_name).collect();
    for index in 0..count {
        let name = task_name(index);
        let body = serde_json::to_value(CreateTaskRequest::new(&name, &sources))?;
        post_until_created(client, masters, tls, "/api/v1/tasks", &format!("task {name}"), &body)?;
    }
    Ok(())
}

/// Creates `count` sources through `POST /api/v1/sources` on any master (followers forward to
/// the leader; right after an election the leader may refuse until its scheduler runs, so each
/// create is retried until the deadline).
pub fn create(
    client: &reqwest::blocking::Client,
    masters: &[&Instance],
    tls: bool,
    count: usize,
) -> Result<()> {
    for index in 0..count {
        let name = source_name(index);
        let body = json!({
            "source": {
                "source_name": name,
                "host": "127.0.0.1",
                "port": 3306 + index,
                "user": "root",
                "password": "",
                "enable_gtid": true,
                "enable": true,
            }
        });
        post_until_created(
            client,
            masters,
            tls,
            "/api/v1/sources",
            &format!("source {name}"),
            &body,
        )?;
    }
    Ok(())
}

/// POSTs `body` to `path` on any master until one accepts it (followers forward to the leader;
/// right after an election the leader may refuse until its scheduler runs).
fn post_until_created(
    client: &reqwest::blocking::Client,
    masters: &[&Instance],
    tls: bool,
    path: &str,
    what: &str,
    body: &serde_json::Value,
) -> Result<()> {
    let mut last_answer = String::new();
    let created = wait::poll(&format!("{what} to be created"), CREATE_TIMEOUT, || {
        masters.iter().any(|master| {
            let url = format!("{}{path}", master.url_for(tls));
            match client.post(&url).json(body).send() {
                Ok(response) if response.status().is_success() => true,
                Ok(response) => {
                    last_answer =
                        format!("{}: {}", response.status(), response.text().unwrap_or_default());
                    false
                }
                Err(err) => {
                    last_answer = err.to_string();
                    false
                }
            }
        })
    });
    if let Err(err) = created {
        bail!("{err}; last answer: {last_answer}");
    }
    Ok(())
}
