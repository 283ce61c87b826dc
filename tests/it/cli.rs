//! The command line as TiUP scripts and operators meet it: help per subcommand, the version,
//! TiUP's global flags wherever TiUP takes them, executors dm-patch does not have, and shell
//! completion.

use crate::support::Store;

/// `dm-patch <args>` in a throwaway store with the `demo` cluster; its stdout.
fn stdout(args: &[&str]) -> String {
    Store::demo().run(args).success().stdout
}

#[test]
fn help_lists_the_global_options_and_subcommands() {
    insta::assert_snapshot!(stdout(&["--help"]));
}

/// `patch --help` lists what applies to patching: the selection, the package options, the
/// SSH and wait settings and the host key policy with its values.
#[test]
fn patch_help_lists_what_applies_to_patch() {
    insta::assert_snapshot!(stdout(&["patch", "--help"]));
}

/// `display --help` lists no SSH, wait or concurrency option: display uses none. The jump host
/// applies: the DM API is asked through it.
#[test]
fn display_help_lists_what_applies_to_display() {
    let help = stdout(&["display", "--help"]);
    assert!(help.contains("--ssh-proxy-host"), "{help}");
    for absent in ["--wait-timeout", "--host-key-policy", "--concurrency", "--yes", "--ssh <"] {
        assert!(!help.contains(absent), "{absent} listed:\n{help}");
    }
    insta::assert_snapshot!(help);
}

/// `dm-patch --version`: version, git commit (or `unknown`) and target.
#[test]
fn version_names_the_commit_and_target() {
    let version = stdout(&["--version"]);
    let pattern = regex_lite(&version);
    assert!(pattern, "unexpected --version: {version:?}");
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

/// `dm-patch <semver> (git <hex or unknown>, <arch>-<vendor>-<os>...)` and a newline.
fn regex_lite(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("dm-patch ") else { return false };
    let Some((semver, rest)) = rest.split_once(" (git ") else { return false };
    let Some((commit, rest)) = rest.split_once(", ") else { return false };
    let Some(target) = rest.strip_suffix(")\n") else { return false };
    semver.split('.').count() == 3
        && (commit == "unknown"
            || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())))
        && target.split('-').count() >= 3
}

/// TiUP's persistent flags, before the subcommand or after it, as scripts pass them.
#[test]
fn tiup_global_flags_parse_where_tiup_takes_them() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let dry = ["-R", "dm-worker", "--dry-run"];
    for leading in [
        &["--yes", "--format", "default"][..],
        &["-y", "-c", "3", "--ssh", "builtin", "--ssh-timeout", "1", "--wait-timeout", "9"],
        &["--host-key-policy", "strict"],
    ] {
        let mut args: Vec<&str> = leading.to_vec();
        args.extend(["patch", "demo", &pkg]);
        args.extend(dry);
        store.run(&args).success();
    }
    let mut args = vec!["patch", "demo", &pkg, "-y", "-c", "2", "--format", "default"];
    args.extend(dry);
    store.run(&args).success();
}

/// `--native-ssh` and TiUP's `TIUP_NATIVE_SSH` choose the system's ssh client (here one that
/// cannot connect, named by TiUP's `TIUP_SSH_PATH`), before or after the subcommand.
#[test]
fn native_ssh_switches_choose_the_system_client() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let refusing_ssh =
        store.file("ssh", b"#!/bin/sh\necho \"ssh: refused by the test\" >&2\nexit 255\n");
    std::fs::set_permissions(&refusing_ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let base = ["patch", "demo", pkg.as_str(), "-R", "dm-worker", "--yes"];
    let runs = [
        store.dm_patch(["--native-ssh"].iter().chain(&base)),
        store.dm_patch(base.iter().chain(&["--ssh", "system"])),
        {
            let mut command = store.dm_patch(base);
            command.env("TIUP_NATIVE_SSH", "true");
            command
        },
    ];
    for mut command in runs {
        let run = crate::support::Run::of(command.env("TIUP_SSH_PATH", &refusing_ssh)).code(1);
        assert!(
            run.stderr.contains("with the system's ssh client: ssh: refused by the test"),
            "{run:?}"
        );
    }
}

/// An executor TiUP does not have, and a password login to the jump host, are refused in one
/// line, exit 2, nothing changed.
#[test]
fn unknown_executors_and_password_jump_logins_are_refused() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let base = ["patch", "demo", pkg.as_str(), "-R", "dm-worker", "--yes"];
    let lines: Vec<String> =
        [&["--ssh", "telnet"][..], &["--ssh-proxy-host", "127.0.9.9", "--ssh-proxy-use-password"]]
            .iter()
            .map(|extra| store.refused(&[&base[..], extra].concat()))
            .collect();
    insta::assert_snapshot!(lines.join(""));
}

/// `--host-key-policy` takes only its listed values, and says which.
#[test]
fn host_key_policy_values_are_listed() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let line =
        store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--host-key-policy", "yes"]);
    assert!(line.contains("[possible values: strict, accept-new, off]"), "{line}");
}

#[test]
fn completion_scripts_call_dm_patch_back() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&["completions", shell]);
        assert!(
            script.contains(&format!("COMPLETE={shell}")) || script.contains("COMPLETE"),
            "{shell}:\n{script}"
        );
        assert!(script.contains("dm-patch"), "{shell}:\n{script}");
        // From PATH: the path of the binary that wrote the script is nowhere in it.
        let binary = env!("CARGO_BIN_EXE_dm-patch");
        assert!(!script.contains(binary), "{shell} calls {binary}:\n{script}");
    }
}

/// The values a shell is offered at `<words>` (fish's protocol: the words, the last one being
/// completed), one candidate a line, without descriptions.
fn candidates(store: &Store, words: &[&str]) -> Vec<String> {
    let run = crate::support::Run::of(
        store
            .dm_patch(
                std::iter::once("--")
                    .chain(std::iter::once("dm-patch"))
                    .chain(words.iter().copied()),
            )
            .env("COMPLETE", "fish"),
    )
    .success();
    let values = run.stdout.lines().map(|line| line.split('\t').next().unwrap().to_owned());
    // Options are offered too where a value may stand; only the values matter here.
    values.filter(|value| !value.starts_with('-')).collect()
}

/// Completion offers the clusters of the store, the roles and the host key policies.
#[test]
fn completion_offers_clusters_roles_and_policies() {
    let store = Store::demo().cluster("other", crate::support::META_V2);
    assert_eq!(candidates(&store, &["display", ""]), ["demo", "other"]);
    assert_eq!(candidates(&store, &["patch", "d"]), ["demo"]);
    let roles = candidates(&store, &["patch", "demo", "x.tar.gz", "-R", ""]);
    assert_eq!(roles, ["dm-master", "dm-worker"]);
    let roles = candidates(&store, &["display", "demo", "-R", ""]);
    assert_eq!(roles, ["dm-master", "dm-worker", "prometheus", "grafana", "alertmanager"]);
    let policies = candidates(&store, &["patch", "demo", "x.tar.gz", "--host-key-policy", ""]);
    assert_eq!(policies, ["strict", "accept-new", "off"]);
}

/// `dm-patch man` is dm-patch(1) in roff, made from the same definitions as `--help`: it names
/// every command and every option each command shows in its help, and says the exit statuses.
#[test]
fn man_page_names_every_command_and_option() {
    use clap::CommandFactory;

    let page = stdout(&["man"]);
    assert!(page.contains("\n.TH DM-PATCH 1 "), "no title:\n{page}");
    // roff writes a dash as `\-`.
    let roff = |text: &str| text.replace('-', "\\-");
    for known in ["--host-key-policy", "--allow-version-change", "--offline", "--status-timeout"] {
        assert!(page.contains(&roff(known)), "{known} missing:\n{page}");
    }
    for section in ["COMMANDS", "\"GLOBAL OPTIONS\"", "\"EXIT STATUS\"", "ENVIRONMENT"] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "no {section}:\n{page}");
    }
    // Each option is described in an entry of its own: the line after a `.TP`.
    let lines: Vec<&str> = page.lines().collect();
    let entries: Vec<&str> = lines.windows(2).filter(|w| w[0] == ".TP").map(|w| w[1]).collect();
    let described = |long: &str| {
        let bold = format!("\\fB{}\\fR", roff(&format!("--{long}")));
        entries.iter().any(|entry| entry.contains(&bold))
    };
    let command = dm_patch::cli::Cli::command();
    let commands: Vec<_> = command.get_subcommands().filter(|sub| !sub.is_hide_set()).collect();
    assert!(commands.len() >= 4, "{commands:?}");
    for sub in commands {
        let heading = format!("\n.SS \"dm-patch {}\"\n", sub.get_name());
        assert!(page.contains(&heading), "no section for {}:\n{page}", sub.get_name());
        let shown = sub.get_arguments().filter(|arg| !arg.is_hide_set());
        for long in shown.filter_map(|arg| arg.get_long()) {
            assert!(described(long), "{} --{long} not described:\n{page}", sub.get_name());
        }
    }
    assert!(described("tiup-home") && described("verbose"), "{page}");
    // Options hidden from help (TiUP's, accepted silently) stay out of the page too.
    assert!(!page.contains(&roff("--native-ssh")), "{page}");
}

/// The man page's ENVIRONMENT lists every variable dm-patch reads (found in its source: the
/// names given to `env::var` and the `*_ENV`/`*_VAR` constants), beyond the shell's own.
#[test]
fn the_man_page_lists_every_environment_variable_read() {
    let page = stdout(&["man"]);
    let environment = page.split(".SH ENVIRONMENT").nth(1).unwrap().split(".SH ").next().unwrap();
    let mut read = std::collections::BTreeSet::new();
    let mut pending = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap_or_default();
            for line in source.lines().filter(|l| {
                l.contains("env::var") || l.contains("_ENV: &str") || l.contains("_VAR: &str")
            }) {
                let quoted = line.split('"').skip(1).step_by(2);
                let names = quoted.filter(|w| {
                    !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                });
                read.extend(names.map(str::to_owned));
            }
        }
    }
    read.retain(|name| !["HOME", "USER", "LOGNAME"].contains(&name.as_str()));
    assert!(read.len() >= 4, "the scan found too little: {read:?}");
    for name in ["NO_COLOR", "RUST_LOG"] {
        read.insert(name.to_owned());
    }
    let missing: Vec<&String> = read.iter().filter(|name| !environment.contains(*name)).collect();
    assert!(missing.is_empty(), "not in the man page: {missing:?}\n{environment}");
}

/// A command line clap refuses is, for a script that asked for JSON, one JSON error line too,
/// wherever `--format json` stands.
#[test]
fn a_usage_error_is_json_when_json_was_asked_for() {
    let store = Store::demo();
    for args in [
        &["--format", "json", "patch", "demo"][..],
        &["patch", "demo", "--format=json"],
        &["patch", "demo", "p.tar.gz", "--expect-sha256", "abc", "--format", "json"],
    ] {
        let run = store.run(args).code(2);
        assert_eq!(run.stdout, "", "{args:?}");
        let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect(&run.stderr);
        crate::support::conforms("error", &error);
        assert_eq!(error["kind"], "bad-input");
        assert!(error["error"].as_str().unwrap().contains("see `dm-patch --help`"), "{error}");
    }
    let text = store.refused(&["patch", "demo"]);
    assert!(text.starts_with("error: the following required arguments"), "{text}");
}
