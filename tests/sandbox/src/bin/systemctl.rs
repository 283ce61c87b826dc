//! `systemctl` for sandbox hosts: the verbs TiUP and dm-patch use, on TiUP's unit files in
//! `$DM_SANDBOX_HOST_DIR/systemd/`, with systemd's output words and exit codes.

use std::process::ExitCode;

use dm_sandbox::units::{ServiceManager, Unit, UnitState, unit_file_name};

/// systemd's exit codes (LSB): 3 "not running", 4 "no such unit", 5 "not installed/loaded".
const EXIT_NOT_RUNNING: u8 = 3;
const EXIT_NO_SUCH_UNIT: u8 = 4;
const EXIT_NOT_LOADED: u8 = 5;

struct Invocation {
    verb: String,
    units: Vec<String>,
    user_scope: bool,
    quiet: bool,
    now: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Invocation, String> {
    let mut invocation = Invocation {
        verb: String::new(),
        units: Vec::new(),
        user_scope: false,
        quiet: false,
        now: false,
    };
    for arg in args {
        match arg.as_str() {
            "--user" => invocation.user_scope = true,
            "--system" => invocation.user_scope = false,
            "-q" | "--quiet" => invocation.quiet = true,
            "--now" => invocation.now = true,
            // Accepted for compatibility; they change nothing here.
            "--no-pager" | "--no-block" | "--no-ask-password" | "-l" | "--full" => {}
            // `status` prints no journal lines here anyway.
            flag if flag.starts_with("--lines=") => {}
            flag if flag.starts_with('-') => return Err(format!("unrecognized option '{flag}'")),
            word if invocation.verb.is_empty() => invocation.verb = word.to_owned(),
            unit => invocation.units.push(unit.to_owned()),
        }
    }
    if invocation.verb.is_empty() {
        return Err("this systemctl needs a command (start, stop, restart, is-active, ...)".into());
    }
    Ok(invocation)
}

fn main() -> ExitCode {
    let invocation = match parse(std::env::args().skip(1)) {
        Ok(invocation) => invocation,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let manager = match ServiceManager::from_env(invocation.user_scope) {
        Ok(manager) => manager,
        Err(err) => {
            eprintln!("{err:#}");
            return ExitCode::FAILURE;
        }
    };
    run(&manager, &invocation)
}

fn run(manager: &ServiceManager, invocation: &Invocation) -> ExitCode {
    match invocation.verb.as_str() {
        "daemon-reload" | "reset-failed" => ExitCode::SUCCESS,
        "start" | "stop" | "restart" => change(manager, invocation, &invocation.verb),
        "enable" | "disable" if invocation.now => {
            let verb = if invocation.verb == "enable" { "start" } else { "stop" };
            change(manager, invocation, verb)
        }
        "enable" | "disable" => each_loaded(manager, invocation, &invocation.verb, |_| Ok(())),
        "is-enabled" => each_loaded(manager, invocation, "query", |_| {
            if !invocation.quiet {
                println!("enabled");
            }
            Ok(())
        }),
        "is-active" => is_active(manager, invocation),
        "status" => status(manager, invocation),
        verb => {
            eprintln!("Unknown command verb '{verb}'.");
            ExitCode::FAILURE
        }
    }
}

/// Runs `action` on every named unit; a missing unit fails the way systemd reports it.
fn each_loaded(
    manager: &ServiceManager,
    invocation: &Invocation,
    verb: &str,
    mut action: impl FnMut(&Unit) -> anyhow::Result<()>,
) -> ExitCode {
    if invocation.units.is_empty() {
        eprintln!("Too few arguments.");
        return ExitCode::FAILURE;
    }
    let mut code = ExitCode::SUCCESS;
    for name in &invocation.units {
        let name = unit_file_name(name);
        match manager.unit(&name) {
            Ok(Some(unit)) => {
                if let Err(err) = action(&unit) {
                    eprintln!("Failed to {verb} {name}: {err:#}");
                    code = ExitCode::FAILURE;
                }
            }
            Ok(None) => {
                eprintln!("Failed to {verb} {name}: Unit {name} not found.");
                code = ExitCode::from(EXIT_NOT_LOADED);
            }
            Err(err) => {
                eprintln!("Failed to {verb} {name}: {err:#}");
                code = ExitCode::FAILURE;
            }
        }
    }
    code
}

fn change(manager: &ServiceManager, invocation: &Invocation, verb: &str) -> ExitCode {
    each_loaded(manager, invocation, verb, |unit| match verb {
        "start" => manager.start(unit).map(drop),
        "stop" => manager.stop(unit),
        _ => manager.restart(unit).map(drop),
    })
}

fn is_active(manager: &ServiceManager, invocation: &Invocation) -> ExitCode {
    let mut all_active = !invocation.units.is_empty();
    for name in &invocation.units {
        let state = manager.state(name);
        all_active &= matches!(state, UnitState::Active(_));
        if !invocation.quiet {
            println!("{}", state.as_str());
        }
    }
    if all_active { ExitCode::SUCCESS } else { ExitCode::from(EXIT_NOT_RUNNING) }
}

fn status(manager: &ServiceManager, invocation: &Invocation) -> ExitCode {
    let mut code = if invocation.units.is_empty() { EXIT_NOT_RUNNING } else { 0 };
    for (index, name) in invocation.units.iter().enumerate() {
        if index > 0 {
            println!();
        }
        let name = unit_file_name(name);
        let unit = match manager.unit(&name) {
            Ok(Some(unit)) => unit,
            Ok(None) => {
                eprintln!("Unit {name} could not be found.");
                code = EXIT_NO_SUCH_UNIT;
                continue;
            }
            Err(err) => {
                eprintln!("{name}: {err:#}");
                return ExitCode::FAILURE;
            }
        };
        let state = manager.state(&name);
        let dot = if matches!(state, UnitState::Active(_)) { '●' } else { '○' };
        println!("{dot} {name} - {}", unit.description);
        println!("     Loaded: loaded ({}; enabled; preset: enabled)", unit.path.display());
        match state {
            UnitState::Active(record) => {
                println!("     Active: active (running)");
                println!("   Main PID: {}", record.pid);
            }
            UnitState::Failed => println!("     Active: failed (Result: exit-code)"),
            UnitState::Inactive => println!("     Active: inactive (dead)"),
        }
        if !matches!(state, UnitState::Active(_)) && code == 0 {
            code = EXIT_NOT_RUNNING;
        }
    }
    ExitCode::from(code)
}
