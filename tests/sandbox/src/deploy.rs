//! What `tiup dm deploy` leaves on disk: the store in TIUP_HOME and, on every host, the deploy
//! directories (binary, run script, config, log dir) and systemd units, all from TiUP's own
//! templates (`embed/templates/scripts/run_dm-*.sh.tpl`, `embed/templates/systemd/system.service.tpl`).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::fault::Fault;
use crate::tls::{ClusterCa, TLS_DIR};
use crate::topology::{DM_MASTER, DM_WORKER, Instance};

/// The executable that stands in for `dm-master`/`dm-worker`: a shell script that fixes the
/// role, version and faults, then execs the simulator (see README, "The simulator's contract").
pub fn binary_wrapper(role: &str, version: &str, faults: &[Fault], dm_sim: &Path) -> String {
    let faults: Vec<&str> = faults.iter().map(|fault| fault.name()).collect();
    format!(
        "#!/bin/sh\n\
         # {role} {version} (dm-sandbox simulator)\n\
         DM_SIM_ROLE={role} DM_SIM_VERSION={version} DM_SIM_FAULT={faults} exec {sim} \"$@\"\n",
        faults = faults.join(","),
        sim = dm_sim.display(),
    )
}

/// Everything an instance's files depend on.
pub struct DeploySpec<'a> {
    pub instances: &'a [Instance],
    pub version: &'a str,
    /// The user services run as (TiUP's `global.user`), for `User=` in the units.
    pub service_user: &'a str,
    pub dm_sim: &'a Path,
    /// `export NAME=value` lines for the run scripts: the simulator's cluster-wide tunables.
    pub sim_env: &'a [(String, String)],
    /// The cluster's CA when TLS is enabled: each instance gets its certificate in
    /// `<deploy_dir>/tls/`, `ssl-*` in its config, and https peer URLs.
    pub tls: Option<&'a ClusterCa>,
    /// Masters serve DM's OpenAPI (`openapi = true` in their config).
    pub openapi: bool,
}

impl DeploySpec<'_> {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Lays out every instance's deploy and data dirs and writes its unit file.
pub fn deploy_instances(spec: &DeploySpec, hosts_dir: &Path) -> Result<()> {
    for instance in spec.instances {
        deploy_instance(spec, instance, hosts_dir)
            .with_context(|| format!("deploying {} {}", instance.role, instance.id))?;
    }
    Ok(())
}

fn deploy_instance(spec: &DeploySpec, instance: &Instance, hosts_dir: &Path) -> Result<()> {
    let deploy = Path::new(&instance.deploy_dir);
    let role = instance.role.as_str();
    for dir in [
        deploy.join("bin").join(role),
        deploy.join("scripts"),
        deploy.join("conf"),
        Path::new(&instance.log_dir).to_path_buf(),
        Path::new(&instance.data_dir).to_path_buf(),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let binary = deploy.join("bin").join(role).join(role);
    write_executable(&binary, &binary_wrapper(role, spec.version, &[], spec.dm_sim))?;
    let script = deploy.join("scripts").join(format!("run_{role}.sh"));
    write_executable(&script, &run_script(spec, instance))?;
    let tls_dir = deploy.join(TLS_DIR);
    if let Some(ca) = spec.tls {
        let identity = ca.instance_identity(role, &instance.host)?;
        ca.write_instance_files(&tls_dir, role, &identity)?;
    }
    let config = config_toml(role, spec.tls.is_some().then_some(tls_dir.as_path()), spec.openapi);
    fs::write(deploy.join("conf").join(format!("{role}.toml")), config)?;
    let units_dir = hosts_dir.join(&instance.host).join("systemd");
    fs::create_dir_all(&units_dir)?;
    fs::write(units_dir.join(&instance.unit), unit_file(instance, spec.service_user))?;
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// TiUP's run script; addresses bind to the host's own IP (TiUP binds 0.0.0.0, but sandbox
/// hosts share one machine), and the simulator's tunables are exported before the exec.
fn run_script(spec: &DeploySpec, instance: &Instance) -> String {
    let mut script = format!(
        "#!/bin/bash
set -e

# WARNING: This file was auto-generated. Do not edit!
#          All your edit might be overwritten!
DEPLOY_DIR={deploy}
cd \"${{DEPLOY_DIR}}\" || exit 1
",
        deploy = instance.deploy_dir,
    );
    if !spec.sim_env.is_empty() {
        script.push_str("\n# dm-sandbox: the simulator's tunables for this cluster\n");
        for (name, value) in spec.sim_env {
            let _ = writeln!(script, "export {name}={value}");
        }
    }
    let role = instance.role.as_str();
    let address = format!("{}:{}", instance.host, instance.port);
    let log = &instance.log_dir;
    let _ = writeln!(script, "\nexec bin/{role}/{role} \\");
    let _ = writeln!(script, "    --name=\"{}\" \\", instance.name);
    if role == DM_MASTER {
        let peer_url = format!(
            "{}://{}:{}",
            spec.scheme(),
            instance.host,
            instance.peer_port.unwrap_or_default()
        );
        let _ = writeln!(script, "    --master-addr=\"{address}\" \\");
        let _ = writeln!(script, "    --advertise-addr=\"{address}\" \\");
        let _ = writeln!(script, "    --peer-urls=\"{peer_url}\" \\");
        let _ = writeln!(script, "    --advertise-peer-urls=\"{peer_url}\" \\");
        let _ = writeln!(script, "    --log-file=\"{log}/dm-master.log\" \\");
        let _ = writeln!(script, "    --data-dir=\"{}\" \\", instance.data_dir);
        let _ = writeln!(
            script,
            "    --initial-cluster=\"{}\" \\",
            initial_cluster(spec.instances, spec.scheme())
        );
    } else {
        let _ = writeln!(script, "    --worker-addr=\"{address}\" \\");
        let _ = writeln!(script, "    --advertise-addr=\"{address}\" \\");
        let _ = writeln!(script, "    --log-file=\"{log}/dm-worker.log\" \\");
        let _ = writeln!(script, "    --join=\"{}\" \\", master_addresses(spec.instances));
    }
    let _ = writeln!(
        script,
        "    --config=conf/{role}.toml >> \"{log}/{role}_stdout.log\" 2>> \"{log}/{role}_stderr.log\""
    );
    script
}

/// `name=http://host:peer_port,...` (https with TLS) of every master.
fn initial_cluster(instances: &[Instance], scheme: &str) -> String {
    let masters = instances.iter().filter(|i| i.is_master());
    let members: Vec<String> = masters
        .map(|m| format!("{}={scheme}://{}:{}", m.name, m.host, m.peer_port.unwrap_or_default()))
        .collect();
    members.join(",")
}

/// `host:port,...` of every master, for a worker's `--join`.
fn master_addresses(instances: &[Instance]) -> String {
    let masters: Vec<&str> =
        instances.iter().filter(|i| i.is_master()).map(|i| i.id.as_str()).collect();
    masters.join(",")
}

/// The config TiUP renders from `server_configs` (meta.yaml sets `log-level: info` for both,
/// and `openapi: true` for masters when asked), with TiUP's `ssl-ca`, `ssl-cert`, `ssl-key` (its
/// `setTLSConfig`) on a TLS cluster.
fn config_toml(role: &str, tls_dir: Option<&Path>, openapi: bool) -> String {
    let section = if role == DM_WORKER { "worker" } else { "master" };
    let mut config = format!(
        "# WARNING: This file is auto-generated. Do not edit! All your modification will be overwritten!\n\
         # You can use 'tiup dm edit-config' and 'tiup dm reload' to update the configuration\n\
         # All configuration items you want to change can be added to:\n\
         # server_configs:\n\
         #   {section}:\n\
         #     aa.b1.c3: value\n\
         #     aa.b2.c4: value\n\
         log-level = \"info\"\n"
    );
    if openapi && role == DM_MASTER {
        config.push_str("openapi = true\n");
    }
    if let Some(dir) = tls_dir {
        let dir = dir.display();
        let _ = writeln!(config, "ssl-ca = \"{dir}/ca.crt\"");
        let _ = writeln!(config, "ssl-cert = \"{dir}/{role}.crt\"");
        let _ = writeln!(config, "ssl-key = \"{dir}/{role}.pem\"");
    }
    config
}

/// TiUP's `system.service.tpl` for a DM instance in system mode.
fn unit_file(instance: &Instance, user: &str) -> String {
    format!(
        "[Unit]
Description={role} service
After=syslog.target network.target remote-fs.target nss-lookup.target

[Service]
LimitNOFILE=1000000
LimitSTACK=10485760
User={user}
ExecStart=/bin/bash -c '{deploy}/scripts/run_{role}.sh'
Restart=always
RestartSec=15s

[Install]
WantedBy=multi-user.target
",
        role = instance.role,
        deploy = instance.deploy_dir,
    )
}
