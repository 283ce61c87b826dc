//! dm-sim: a DM simulator that runs as `dm-master` or `dm-worker`, faithful to the DM-master
//! HTTP API dm-patch relies on (members, leader eviction, forwarding, `/status`, `/health`,
//! workers and sources), started by TiUP's run scripts with TiUP's flags. Its contract is in
//! tests/sandbox/README.md ("The simulator's contract").

mod cli;
mod election;
mod events;
mod faults;
mod http;
mod master;
mod master_api;
mod peer;
mod scheduler;
mod state;
mod subtasks;
mod tasks;
mod tls;
mod worker;

use cli::Role;
use dm_sandbox::Fault;

/// Exit code for bad flags or environment, and for a server that cannot start.
const EXIT_FAILURE: i32 = 1;

fn main() {
    http::note_start();
    let args: Vec<String> = std::env::args().collect();
    let settings = match cli::settings_from_env(&args) {
        Ok(settings) => settings,
        Err(message) => fail(&message),
    };
    if settings.wants_version() {
        print!("{}", settings.packaged_version());
        return;
    }
    if settings.has(Fault::ExitAtStart) {
        fail(&format!("{} cannot start: exit-at-start fault injected", settings.role.name()));
    }
    // DM reads its --config file; the simulator takes only the TLS settings from it (read
    // with the flags), and runs without one.
    std::thread::sleep(settings.timings.start_delay);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| fail(&format!("cannot start the async runtime: {err}")));
    let role = settings.role;
    let outcome = runtime.block_on(async move {
        match role {
            Role::Master => master::run(settings).await,
            Role::Worker => worker::run(settings).await,
        }
    });
    // Background tasks (servers, the tick) end with the process.
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(message) => fail(&format!("{}: {message}", role.name())),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("[FATAL] dm-sim: {message}");
    std::process::exit(EXIT_FAILURE)
}
