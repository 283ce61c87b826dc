//! `dm-patch display`: TiUP's cluster table with live status and the running version.
//!
//! All queries go out at once with short timeouts (one members call through whichever master
//! answers first, one `/status` per instance), so a dead host costs one timeout, not one each.

use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::cli::{DisplayArgs, GlobalArgs};
use crate::dm::client::{DmClient, MembersResponse};
use crate::error::ExitStatus;
use crate::output::table::tiup_table;
use crate::output::{Printer, Style};
use crate::topology::select::Filter;
use crate::topology::store::Store;
use crate::topology::{Cluster, Instance, Role};

/// One row, as the table and the JSON show it.
#[derive(Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub role: String,
    pub patched: bool,
    pub host: String,
    pub ports: String,
    pub os_arch: String,
    pub status: String,
    pub version: Option<String>,
    pub data_dir: String,
    pub deploy_dir: String,
}

pub async fn run(
    args: DisplayArgs,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let store = Store::locate(global.tiup_home.clone())?;
    let cluster = store.load(&args.cluster)?;
    let filter = Filter { roles: args.filter.roles, nodes: args.filter.nodes };
    let mut selected: Vec<Instance> = filter.apply(&cluster)?.into_iter().cloned().collect();
    // TiUP's order: role name, then host, then port.
    selected.sort_by(|a, b| (a.role, &a.host, a.port).cmp(&(b.role, &b.host, b.port)));

    let client = DmClient::new(Duration::from_secs(global.ssh_timeout), cluster.tls_enabled());
    let (members, versions) =
        tokio::join!(members_from_first(&client, &cluster), versions(&client, &selected));
    let rows: Vec<Row> = selected
        .iter()
        .zip(versions)
        .map(|(instance, version)| row(instance, members.as_ref(), version))
        .collect();

    if printer.is_json() {
        printer.json(&rows);
    } else {
        printer.result(render(&cluster, &rows, printer));
    }
    Ok(ExitStatus::Success)
}

/// Members from whichever dm-master answers first; `None` if none does.
async fn members_from_first(client: &DmClient, cluster: &Cluster) -> Option<MembersResponse> {
    let mut calls = JoinSet::new();
    for master in cluster.instances.iter().filter(|i| i.role == Role::Master) {
        let client = client.clone();
        let addr = master.addr();
        calls.spawn(async move { client.members(&addr).await });
    }
    while let Some(answer) = calls.join_next().await {
        if let Ok(Ok(members)) = answer {
            return Some(members);
        }
    }
    None
}

/// Each instance's running Release Version (`None` when it does not answer), in input order.
async fn versions(client: &DmClient, instances: &[Instance]) -> Vec<Option<String>> {
    let mut calls = JoinSet::new();
    for (index, instance) in instances.iter().enumerate() {
        let client = client.clone();
        let addr = instance.addr();
        calls.spawn(async move { (index, client.status(&addr).await.ok().map(|v| v.release)) });
    }
    let mut versions = vec![None; instances.len()];
    while let Some(answer) = calls.join_next().await {
        if let Ok((index, version)) = answer {
            versions[index] = version;
        }
    }
    versions
}

fn row(instance: &Instance, members: Option<&MembersResponse>, version: Option<String>) -> Row {
    let role = instance.role.component();
    Row {
        id: instance.id(),
        role: if instance.patched { format!("{role} (patched)") } else { role.to_owned() },
        patched: instance.patched,
        host: instance.host.clone(),
        ports: match instance.peer_port {
            Some(peer) => format!("{}/{peer}", instance.port),
            None => instance.port.to_string(),
        },
        os_arch: format!("{}/{}", instance.os, instance.arch.machine_name()),
        status: status(instance, members, version.is_some()),
        version,
        data_dir: instance.data_dir.clone(),
        deploy_dir: instance.deploy_dir.clone(),
    }
}

/// TiUP's status words: masters Healthy, Healthy|L, Unhealthy, Down, N/A; workers their stage
/// capitalised (Free, Bound, Offline, Relay), Down, N/A.
fn status(instance: &Instance, members: Option<&MembersResponse>, answers: bool) -> String {
    if !answers {
        return "Down".to_owned();
    }
    let Some(members) = members else {
        return "N/A".to_owned();
    };
    match instance.role {
        Role::Master => match members.masters().iter().find(|m| m.name == instance.name) {
            None => "N/A".to_owned(),
            Some(master) if !master.alive => "Unhealthy".to_owned(),
            Some(_) if members.leader().is_some_and(|l| l.name == instance.name) => {
                "Healthy|L".to_owned()
            }
            Some(_) => "Healthy".to_owned(),
        },
        Role::Worker => match members.workers().iter().find(|w| w.name == instance.name) {
            Some(worker) if !worker.stage.is_empty() => capitalise(&worker.stage),
            _ => "N/A".to_owned(),
        },
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn render(cluster: &Cluster, rows: &[Row], printer: &Printer) -> String {
    let global = cluster.meta.topology.global.as_ref();
    let ssh_type = global.and_then(|g| g.ssh_type.as_deref()).unwrap_or("builtin");
    let mut out = format!(
        "Cluster type:       dm\nCluster name:       {}\nCluster version:    {}\nDeploy user:        {}\nSSH type:           {ssh_type}\n",
        printer.paint(&cluster.name, Style::Bold),
        cluster.version(),
        cluster.ssh_user(),
    );
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.id.clone(),
                row.role.clone(),
                row.host.clone(),
                row.ports.clone(),
                row.os_arch.clone(),
                printer.paint(&row.status, status_style(&row.status)),
                row.version.clone().unwrap_or_else(|| "-".to_owned()),
                row.data_dir.clone(),
                row.deploy_dir.clone(),
            ]
        })
        .collect();
    out.push_str(&tiup_table(
        &["ID", "Role", "Host", "Ports", "OS/Arch", "Status", "Version", "Data Dir", "Deploy Dir"],
        &cells,
    ));
    out.push_str(&format!("\nTotal nodes: {}", rows.len()));
    out
}

fn status_style(status: &str) -> Style {
    match status {
        "Healthy" | "Healthy|L" | "Free" | "Bound" | "Relay" => Style::Good,
        "Down" | "Unhealthy" | "Offline" => Style::Bad,
        _ => Style::Warn,
    }
}
