//! The command line and the documentation rendered from the settings
//! table: the clap command (every flag of the table, plus `--config` and
//! `--check-config`), `--help`'s configuration file, and the README's
//! configuration table.

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::define::Key;
use super::help::{AFTER_CONFIG, LONG_ABOUT};
use super::table::{keys, DEFAULT_LISTEN, DEFAULT_PIN_DIR, DEFAULT_REALTIME_PRIORITY, SECTIONS};
use super::{read_file, settle, ConfigError, FileConfig, Settings};

/// `--help`'s column where comments start in the configuration file.
const COMMENT_AT: usize = 37;
/// `--help`'s width for those comments.
const WIDTH: usize = 92;

/// The command line of kdns.
pub fn command() -> Command {
    let mut cmd = Command::new("kdns")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Host-local DNS fast path for containers")
        .long_about(fill(LONG_ABOUT))
        .after_long_help(format!("{}\n{}", config_file_help(), fill(AFTER_CONFIG)))
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("Configuration file (TOML). Without it, built-in defaults apply")
                .display_order(0),
        );
    for flag in keys().into_iter().filter_map(|k| k.flag) {
        cmd = cmd.arg(flag.arg());
    }
    cmd.arg(
        Arg::new("check-config")
            .long("check-config")
            .action(ArgAction::SetTrue)
            .help("Check the configuration, print the settings that would be used, and exit")
            .display_order(100),
    )
    .arg(
        Arg::new("uninstall-xdp")
            .long("uninstall-xdp")
            .action(ArgAction::SetTrue)
            .help("Detach and unpin the XDP program a previous kdns left pinned (under xdp.pin_dir, for xdp.interfaces or every interface there), print what was removed, and exit")
            .display_order(101),
    )
    .arg(
        Arg::new("takeover")
            .long("takeover")
            .action(ArgAction::SetTrue)
            .help("Replace the kdns running on this host without losing a query: receive its listening sockets, cache and AF_XDP queues over server.handover_socket, then let it finish and exit (with none running, start normally)")
            .display_order(102),
    )
    .arg(
        Arg::new("supervise")
            .long("supervise")
            .action(ArgAction::SetTrue)
            .help("Run the server as a child of a small process that holds the listening sockets: a server that dies is started again at once on them and no query is lost meanwhile; SIGUSR2 or SIGHUP replaces the server make-before-break (for containers and pods; see RESTARTS AND UPGRADES)")
            .display_order(103),
    )
    .arg(
        Arg::new("print-config-reference")
            .long("print-config-reference")
            .action(ArgAction::SetTrue)
            .hide(true)
            .help("Print the configuration reference (the README's table) and exit"),
    )
}

/// The settings of a parsed command line: its `--config` file (or the
/// defaults), with its flags in place of the file's keys.
pub fn load(m: &ArgMatches, resolv_conf: Option<&str>, cores: usize) -> Result<Settings, ConfigError> {
    let mut file = match m.get_one::<std::path::PathBuf>("config") {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let names = file.apply_flags(m)?;
    settle(file, &names, resolv_conf, cores)
}

/// The prose with the defaults it mentions filled in.
fn fill(text: &str) -> String {
    text.replace("{listen}", DEFAULT_LISTEN)
        .replace("{realtime_priority}", &DEFAULT_REALTIME_PRIORITY.to_string())
        .replace("{pin_dir}", DEFAULT_PIN_DIR)
}

/// Each key's default as the documentation shows it (TOML), in table order.
fn defaults() -> Vec<(Key, Option<String>)> {
    let file = toml::Value::try_from(FileConfig::default()).ok();
    keys()
        .into_iter()
        .map(|k| {
            let v = k.shown.clone().or_else(|| {
                let v = file.as_ref()?.get(k.section)?.get(k.name)?;
                Some(v.to_string())
            });
            (k, v)
        })
        .collect()
}

/// What a key accepts, when the table checks it: a range or words.
fn accepts(k: &Key, quote: fn(&str) -> String) -> Option<String> {
    if let Some(r) = &k.range {
        return Some(r.clone());
    }
    let words: Vec<String> = k.words.as_ref()?.iter().map(|w| quote(w)).collect();
    Some(match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.concat(),
    })
}

/// `--help`'s configuration file: every key with its default and meaning.
pub fn config_file_help() -> String {
    let mut out = String::from("CONFIGURATION FILE (TOML; every key optional, defaults shown):\n");
    let all = defaults();
    for (i, s) in SECTIONS.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        comment_line(&mut out, format!("    [{}]", s.name), s.note);
        for (k, v) in all.iter().filter(|(k, _)| k.section == s.name) {
            let notes: Vec<String> = accepts(k, |w| format!("\"{w}\"")).into_iter().collect();
            let doc = with_notes(&plain(k.doc), &notes);
            let v = k.example.or(v.as_deref()).unwrap_or("");
            comment_line(&mut out, format!("    {} = {v}", k.name), &doc);
        }
    }
    out
}

/// Markdown's code spans as plain text, each kept on one line when
/// wrapped (its spaces are U+0001 until [`comment_line`] puts them back).
fn plain(doc: &str) -> String {
    doc.split('`').enumerate().map(|(i, part)| if i % 2 == 1 { part.replace(' ', "\u{1}") } else { part.to_string() }).collect()
}

/// `doc` with `notes` in parentheses (in its own closing parenthesis
/// when it ends with one).
fn with_notes(doc: &str, notes: &[String]) -> String {
    match (notes.join("; "), doc.strip_suffix(')')) {
        (n, _) if n.is_empty() => doc.to_string(),
        (n, Some(open)) => format!("{open}; {n})"),
        (n, None) => format!("{doc} ({n})"),
    }
}

/// `left`, then `comment` from column [`COMMENT_AT`] (on the next lines
/// when `left` reaches it), wrapped to [`WIDTH`].
fn comment_line(out: &mut String, left: String, comment: &str) {
    out.push_str(&left);
    let mut col = left.len();
    for l in wrap(comment, WIDTH - COMMENT_AT - 2) {
        if col >= COMMENT_AT {
            out.push('\n');
            col = 0;
        }
        out.push_str(&" ".repeat(COMMENT_AT - col));
        out.push_str("# ");
        out.push_str(&l.replace('\u{1}', " "));
        col = COMMENT_AT;
    }
    out.push('\n');
}

/// Greedy word wrap (a word longer than `width` gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.len() + 1 + word.len() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// The README's configuration table, and the notes on its sections.
pub fn reference_table() -> String {
    let mut out = String::from("| section | key | default | meaning |\n|---|---|---|---|\n");
    for (k, v) in defaults() {
        let mut notes = Vec::new();
        if let Some(a) = accepts(&k, |w| format!("`{w}`")) {
            notes.push(a);
        }
        if let Some(f) = &k.flag {
            notes.push(format!("`--{}`", f.long));
        }
        let default = v.map_or(String::new(), |v| format!("`{v}`"));
        out.push_str(&format!("| {} | {} | {} | {} |\n", k.section, k.name, cell(&default), cell(&with_notes(k.doc, &notes))));
    }
    out.push('\n');
    for s in SECTIONS.iter().filter(|s| !s.note.is_empty()) {
        out.push_str(&format!("- `[{}]`: {}\n", s.name, s.note));
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}
