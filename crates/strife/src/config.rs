//! Optional TOML config files and `STRIFE_*` environment variables for the long-running
//! processes (`strife bank`, `strife gateway`, `strife dev`).
//!
//! The flags stay the one definition of every setting: a file's keys are the flags' long
//! names (kebab-case, `prepare-timeout = "2s"`), and the environment variable of a flag is
//! `STRIFE_<PROCESS>_<FLAG>` (`STRIFE_GATEWAY_PREPARE_TIMEOUT`). A file value is turned back
//! into a `--key=value` argument, inserted only when neither the command line nor the
//! environment sets that flag, so clap does all parsing and the precedence is
//! flag > environment > file > default. File values are checked here first, with the flag's
//! own value parser, so an error names the file and the key rather than a flag nobody typed.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context};
use clap::{Arg, ArgAction, Command};

/// Subcommands that read `--config`.
pub const PROCESSES: [&str; 3] = ["bank", "gateway", "dev"];

/// Flags that are no settings: `--initialize` is a deliberate one-off (replacing a lost
/// database), which a file or a forgotten environment variable must never repeat on every
/// start; `--config` names the file itself.
const NOT_SETTINGS: [&str; 4] = ["config", "initialize", "help", "version"];

/// Whether `arg` is a setting a file or the environment may give.
fn is_setting(arg: &Arg) -> bool {
    arg.get_long()
        .is_some_and(|long| !NOT_SETTINGS.contains(&long) && !arg.is_global_set())
}

/// `STRIFE_GATEWAY_PREPARE_TIMEOUT` for `gateway` / `prepare-timeout`.
pub fn env_name(process: &str, key: &str) -> String {
    format!("STRIFE_{process}_{key}")
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// Gives every setting of every long-running process its environment variable, and
/// `--config` its own (`STRIFE_<PROCESS>_CONFIG`).
pub fn with_env(mut command: Command) -> Command {
    for process in PROCESSES {
        // `mut_subcommand` panics on a missing subcommand.
        if command.find_subcommand(process).is_none() {
            continue;
        }
        command = command.mut_subcommand(process, |mut sub| {
            let names: Vec<(String, String)> = sub
                .get_arguments()
                .filter(|arg| is_setting(arg) || arg.get_long() == Some("config"))
                .filter_map(|arg| {
                    let long = arg.get_long()?;
                    Some((arg.get_id().to_string(), env_name(process, long)))
                })
                .collect();
            for (id, env) in names {
                // clap keeps `&'static str` names without its `string` feature; these are a
                // few dozen short strings made once per process.
                let env: &'static str = Box::leak(env.into_boxed_str());
                sub = sub.mut_arg(id, |arg| arg.env(env));
            }
            sub
        });
    }
    command
}

/// Where the subcommand is in `args` (after the binary and any global flags).
fn subcommand_index(args: &[OsString]) -> Option<usize> {
    args.iter()
        .enumerate()
        .skip(1)
        .find(|(_, arg)| !arg.to_string_lossy().starts_with('-'))
        .map(|(index, _)| index)
}

/// The long flags given on the command line after the subcommand, and `--config`'s value.
fn scan(args: &[OsString]) -> (Vec<String>, Option<OsString>) {
    let mut present = Vec::new();
    let mut config = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        let Some(flag) = text.strip_prefix("--") else {
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(OsString::from(value))),
            None => (flag.to_owned(), None),
        };
        if name == "config" {
            config = inline.or_else(|| iter.next().cloned());
        }
        present.push(name);
    }
    (present, config)
}

/// Returns `args` with the settings of the `--config` file (if the subcommand is a
/// long-running process and one is given) added as flags.
pub fn apply(command: &Command, args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(index) = subcommand_index(&args) else {
        return Ok(args);
    };
    let process = args[index].to_string_lossy().into_owned();
    if !PROCESSES.contains(&process.as_str()) {
        return Ok(args);
    }
    let Some(sub) = command.find_subcommand(&process) else {
        return Ok(args);
    };
    let (present, flag_config) = scan(&args[index + 1..]);
    let Some(path) = flag_config.or_else(|| std::env::var_os(env_name(&process, "config"))) else {
        return Ok(args);
    };
    let path = Path::new(&path);
    check_config_file_is_trusted(path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let env_set = |arg: &Arg| {
        arg.get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
    };
    let extra = file_arguments(sub, &table, path, &present, &env_set)?;
    let mut merged = args;
    merged.splice(index + 1..index + 1, extra);
    Ok(merged)
}

/// Refuses a config file that someone other than this process's user (or root) could have
/// written: it decides where the process listens, which etcd and database it trusts and where
/// its data lives, so a file others may write is a way to take the process over — the same
/// rule as for private keys readable by others (`tls::check_key_is_private`) and ssh's for its
/// configuration. The file's target is checked (a symbolic link is followed).
fn check_config_file_is_trusted(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let effective_user = rustix::process::geteuid().as_raw();
    file_trust(metadata.mode(), metadata.uid(), effective_user)
        .map_err(|why| anyhow::anyhow!("config file {}: {why}", path.display()))
}

/// Why a file of `mode`, owned by `owner`, must not configure a process running as
/// `effective_user`: written by group or others, or owned by another user who is not root.
/// The message says how to fix it.
fn file_trust(mode: u32, owner: u32, effective_user: u32) -> Result<(), String> {
    let mode = mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by {} (mode {mode:04o}); refusing to use it. Run `chmod go-w FILE` \
             (and check what others may have written into it)",
            match mode & 0o022 {
                0o002 => "others",
                0o020 => "its group",
                _ => "its group and others",
            }
        ));
    }
    if owner != effective_user && owner != 0 {
        return Err(format!(
            "owned by user id {owner}, not by this process's user ({effective_user}) or root; \
             refusing to use it. Run `chown {effective_user} FILE` (or have root own it)"
        ));
    }
    Ok(())
}

/// The flags the file contributes: every key checked (unknown keys and bad values are
/// errors even when a flag overrides them, so a file never silently carries a mistake),
/// then only those neither `present` on the command line nor set in the environment.
pub fn file_arguments(
    sub: &Command,
    table: &toml::Table,
    path: &Path,
    present: &[String],
    env_set: &dyn Fn(&Arg) -> bool,
) -> anyhow::Result<Vec<OsString>> {
    let file = path.display();
    let mut extra = Vec::new();
    for (key, value) in table {
        let Some(arg) = sub
            .get_arguments()
            .find(|arg| is_setting(arg) && arg.get_long() == Some(key.as_str()))
        else {
            let kebab = key.replace('_', "-");
            if kebab != *key
                && sub
                    .get_arguments()
                    .any(|arg| is_setting(arg) && arg.get_long() == Some(kebab.as_str()))
            {
                bail!(
                    "{file}: unknown key `{key}` (keys are kebab-case like the flags: `{kebab}`)"
                );
            }
            let known: Vec<&str> = sub
                .get_arguments()
                .filter(|arg| is_setting(arg))
                .filter_map(Arg::get_long)
                .collect();
            bail!(
                "{file}: unknown key `{key}` for `strife {}`; known keys: {}",
                sub.get_name(),
                known.join(", ")
            );
        };
        let texts = value_texts(arg, key, value).map_err(|expected| {
            anyhow::anyhow!("{file}: key `{key}` has the wrong type: expected {expected}")
        })?;
        for text in &texts {
            let pieces: Vec<&str> = match arg.get_value_delimiter() {
                Some(delimiter) => text.split(delimiter).collect(),
                None => vec![text.as_str()],
            };
            for piece in pieces {
                check_value(arg, piece).map_err(|reason| {
                    anyhow::anyhow!(
                        "{file}: key `{key}`: invalid value {piece:?} ({reason}); expected {}",
                        expected_form(arg)
                    )
                })?;
            }
        }
        if present.iter().any(|name| name == key) || env_set(arg) {
            continue;
        }
        for text in texts {
            extra.push(OsString::from(format!("--{key}={text}")));
        }
        if is_flag(arg) && matches!(value, toml::Value::Boolean(true)) {
            extra.push(OsString::from(format!("--{key}")));
        }
    }
    Ok(extra)
}

fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

/// The argument texts of one file value; `Err` says which TOML type the key takes.
fn value_texts(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    if is_flag(arg) {
        // A switch: `true` adds the flag (done by the caller), `false` leaves it off.
        return match value {
            toml::Value::Boolean(_) => Ok(Vec::new()),
            _ => Err(format!("true or false (`{key} = true`)")),
        };
    }
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        _ => None,
    };
    match value {
        toml::Value::Array(items) if arg.get_value_delimiter().is_some() => items
            .iter()
            .map(|item| scalar(item).ok_or_else(|| format!("strings, e.g. {}", expected_form(arg))))
            .collect::<Result<Vec<_>, _>>()
            .map(|items| vec![items.join(",")]),
        other => scalar(other)
            .map(|text| vec![text])
            .ok_or_else(|| expected_form(arg)),
    }
}

/// Runs the flag's own parser on `value` (a one-flag command, since clap keeps the parser
/// call itself private); `Err` is its complaint without clap's decoration.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let probe = Command::new("strife-config")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(arg.clone().required(false));
    match probe.try_get_matches_from([format!("--{long}={value}")]) {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = error.to_string();
            let line = text.lines().next().unwrap_or_default();
            let line = line.strip_prefix("error: ").unwrap_or(line);
            // clap phrases it for a flag ("for '--x <X>': reason"); keep the reason.
            Err(match line.rsplit_once("': ") {
                Some((_, reason)) => reason.to_owned(),
                None => line.to_owned(),
            })
        }
    }
}

/// How a value of `arg` is written in a file, from its default (or its value name).
fn expected_form(arg: &Arg) -> String {
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|value| value.get_name().to_owned())
        .collect();
    if !possible.is_empty() {
        return format!("one of {}", possible.join(", "));
    }
    match arg.get_default_values().first() {
        Some(default) => format!(
            "a value like {}",
            toml_value(arg, &default.to_string_lossy())
        ),
        None => {
            let name = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map(|name| name.to_string())
                .unwrap_or_else(|| "VALUE".into());
            format!("a string ({name})")
        }
    }
}

/// `text` written as TOML: numbers bare, everything else a string.
fn toml_value(arg: &Arg, text: &str) -> String {
    if is_flag(arg) || text.parse::<i64>().is_ok() {
        text.to_owned()
    } else {
        toml::Value::String(text.to_owned()).to_string()
    }
}

/// What the example files show for settings that have no default: a realistic value that
/// parses as it stands once uncommented (a unit test in `cli.rs` checks every line).
const EXAMPLE_VALUES: [(&str, &str); 8] = [
    ("id", "bank0"),
    ("advertise", "10.0.0.2:50051"),
    ("coordinator", "10.0.0.1:50050"),
    ("metrics-listen", "127.0.0.1:9464"),
    ("replica-id", "gateway-a"),
    ("web-listen", "127.0.0.1:8443"),
    ("http-listen", "127.0.0.1:8444"),
    ("grpc-api-key-listen", "127.0.0.1:8445"),
];

/// The example value of a setting without a default, if there is one.
pub fn example_value(key: &str) -> Option<&'static str> {
    EXAMPLE_VALUES
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| *value)
}

/// A commented example config for `process`: every key with its help and default (or, for a
/// key without one, an example value), each commented out so the file as written changes
/// nothing and each line, uncommented, is a valid setting.
pub fn example(command: &Command, process: &str) -> anyhow::Result<String> {
    let sub = command
        .find_subcommand(process)
        .with_context(|| format!("no subcommand {process}"))?;
    let mut text = format!(
        "# Example config for `strife {process} --config FILE`.\n\
         # Keys are the flags' long names (kebab-case). Precedence: a flag beats its\n\
         # environment variable (STRIFE_{}_<KEY>, e.g. {}), which beats this file, which\n\
         # beats the default. Unknown keys are an error. Uncomment what you change.\n",
        process.to_ascii_uppercase(),
        env_name(process, "listen"),
    );
    for arg in sub.get_arguments().filter(|arg| is_setting(arg)) {
        let Some(key) = arg.get_long() else { continue };
        text.push('\n');
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            for line in help.to_string().lines() {
                text.push_str(format!("# {line}").trim_end());
                text.push('\n');
            }
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| value.to_string_lossy().into_owned())
            .collect();
        if is_flag(arg) {
            text.push_str(&format!("# {key} = false\n"));
        } else if defaults.is_empty() {
            let (value, note) = match (example_value(key), arg.is_required_set()) {
                (Some(value), true) => (toml_value(arg, value), "required; an example"),
                (Some(value), false) => (toml_value(arg, value), "unset by default; an example"),
                (None, true) => ("\"\"".to_owned(), "required"),
                (None, false) => ("\"\"".to_owned(), "no default"),
            };
            text.push_str(&format!("# {key} = {value}   # {note}\n"));
        } else {
            text.push_str(&format!(
                "# {key} = {}\n",
                toml_value(arg, &defaults.join(","))
            ));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Args {
        /// Listen here.
        #[arg(long, default_value = "127.0.0.1:50050")]
        listen: std::net::SocketAddr,
        /// Phase-1 timeout.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        prepare_timeout: Duration,
        #[arg(long, value_delimiter = ',', default_value = "http://a")]
        etcd: Vec<String>,
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=60))]
        lease_ttl: i64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        initialize: bool,
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    }

    fn command() -> Command {
        <Args as clap::CommandFactory>::command()
    }

    fn merged(file: &str, present: &[&str], env: &[&str]) -> anyhow::Result<Vec<String>> {
        let table: toml::Table = file.parse()?;
        let present: Vec<String> = present.iter().map(|name| name.to_string()).collect();
        let env_set = |arg: &Arg| env.contains(&arg.get_id().as_str());
        let extra = file_arguments(&command(), &table, Path::new("x.toml"), &present, &env_set)?;
        Ok(extra
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn file_values_become_flags() {
        let extra = merged(
            "listen = \"0.0.0.0:1\"\nprepare-timeout = \"750ms\"\nlease-ttl = 7\njson = true\netcd = [\"https://a\", \"https://b\"]",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            extra,
            [
                "--etcd=https://a,https://b",
                "--json",
                "--lease-ttl=7",
                "--listen=0.0.0.0:1",
                "--prepare-timeout=750ms"
            ]
        );
        assert!(merged("json = false", &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn flags_and_environment_beat_the_file() {
        let extra = merged(
            "listen = \"0.0.0.0:1\"\nlease-ttl = 7",
            &["listen"],
            &["lease_ttl"],
        )
        .unwrap();
        assert!(extra.is_empty(), "{extra:?}");
    }

    #[test]
    fn unknown_and_snake_case_keys_are_named() {
        let error = merged("colour = 1", &[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("x.toml") && error.contains("`colour`"),
            "{error}"
        );
        let error = merged("lease_ttl = 1", &[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("`lease_ttl`") && error.contains("`lease-ttl`"),
            "{error}"
        );
        // A one-off action is no setting.
        let error = merged("initialize = true", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`initialize`"), "{error}");
    }

    #[test]
    fn bad_values_name_file_key_and_form_even_when_overridden() {
        let error = merged("prepare-timeout = \"soon\"", &["prepare-timeout"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("x.toml")
                && error.contains("`prepare-timeout`")
                && error.contains("\"2s\""),
            "{error}"
        );
        let error = merged("lease-ttl = 100", &[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("`lease-ttl`") && error.contains("100"),
            "{error}"
        );
        let error = merged("json = \"yes\"", &[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("`json`") && error.contains("true or false"),
            "{error}"
        );
        let error = merged("listen = 5", &[], &[]).unwrap_err().to_string();
        assert!(error.contains("`listen`"), "{error}");
    }

    #[test]
    fn example_lists_every_setting_and_loads_as_is() {
        let text = example(&command().subcommand(command().name("gateway")), "gateway").unwrap();
        for key in ["listen", "prepare-timeout", "etcd", "lease-ttl", "json"] {
            assert!(
                text.contains(&format!("# {key} = ")),
                "{key} missing:\n{text}"
            );
        }
        assert!(text.contains("# prepare-timeout = \"2s\""), "{text}");
        assert!(text.contains("# lease-ttl = 5"), "{text}");
        assert!(!text.contains("initialize ="), "{text}");
        let table: toml::Table = text.parse().unwrap();
        assert!(table.is_empty());
    }

    #[test]
    fn only_files_of_this_user_or_root_written_by_no_one_else_are_trusted() {
        let me = 1000;
        for (mode, owner) in [
            (0o600, me),
            (0o644, me),
            (0o400, 0),
            (0o755, 0),
            (0o100644, me),
        ] {
            assert_eq!(
                file_trust(mode, owner, me),
                Ok(()),
                "{mode:o} owned by {owner}"
            );
        }
        for (mode, written_by) in [
            (0o666, "its group and others"),
            (0o602, "others"),
            (0o620, "its group"),
            (0o100646, "others"),
        ] {
            let why = file_trust(mode, me, me).unwrap_err();
            assert!(why.contains(written_by), "{mode:o}: {why}");
            assert!(why.contains("chmod go-w"), "{why}");
        }
        let why = file_trust(0o600, 1001, me).unwrap_err();
        assert!(
            why.contains("user id 1001") && why.contains("chown"),
            "{why}"
        );
        // Root runs only files root owns (or its own: the same).
        assert!(file_trust(0o600, 1000, 0).is_err());
        assert_eq!(file_trust(0o600, 0, 0), Ok(()));
    }

    #[test]
    fn a_config_file_others_may_write_is_refused_naming_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "json = true\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_config_file_is_trusted(&path).unwrap();
        for mode in [0o666, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = check_config_file_is_trusted(&path).unwrap_err().to_string();
            assert!(
                error.contains(&path.display().to_string()) && error.contains("chmod go-w"),
                "{error}"
            );
        }
        // The same through `apply`, before the file is read or parsed.
        std::fs::write(&path, "not toml at all [").unwrap();
        let command = Command::new("strife").subcommand(command().name("gateway"));
        let args = ["strife", "gateway", "--config"]
            .map(OsString::from)
            .into_iter()
            .chain([path.clone().into_os_string()])
            .collect();
        let error = apply(&command, args).unwrap_err().to_string();
        assert!(error.contains("writable by"), "{error}");
    }

    #[test]
    fn environment_names() {
        assert_eq!(
            env_name("gateway", "prepare-timeout"),
            "STRIFE_GATEWAY_PREPARE_TIMEOUT"
        );
        let command = with_env(Command::new("strife").subcommand(command().name("gateway")));
        let sub = command.find_subcommand("gateway").unwrap();
        let env = |id: &str| {
            sub.get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(|arg| arg.get_env())
                .map(|env| env.to_string_lossy().into_owned())
        };
        assert_eq!(env("listen").as_deref(), Some("STRIFE_GATEWAY_LISTEN"));
        assert_eq!(env("config").as_deref(), Some("STRIFE_GATEWAY_CONFIG"));
        assert_eq!(env("initialize"), None);
    }
}
