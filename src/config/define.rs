//! The machinery of the settings table: the `settings!` macro that turns
//! one line per setting into the file's section structs, their defaults,
//! their range and word checks, the command-line flags and the key
//! descriptors the documentation is rendered from.
//!
//! A `macro_rules!` table rather than a derive: the definitions stay plain
//! Rust in one file, with no procedural-macro crate to build and keep.

use clap::{Arg, ArgAction, ArgMatches};

use super::{BackendEntry, ConfigError, Workers};

/// One setting, as the documentation shows it.
#[derive(Debug, Clone)]
pub struct Key {
    /// The section (`server`, `cache`, ...).
    pub section: &'static str,
    /// The key within it.
    pub name: &'static str,
    /// What it means.
    pub doc: &'static str,
    /// The accepted range (`"1..=1024"`, `"at least 1"`), when the table checks one.
    pub range: Option<String>,
    /// The accepted words, when the value is one of a few.
    pub words: Option<Vec<&'static str>>,
    /// The default as written in the documentation, when it is not the
    /// value of the section's `Default` (a value computed from others, or
    /// an example).
    pub shown: Option<String>,
    /// A value `--help`'s configuration file shows instead of the default,
    /// to show the syntax.
    pub example: Option<&'static str>,
    /// The command-line flag that replaces it.
    pub flag: Option<Flag>,
}

/// A command-line flag that replaces a setting.
#[derive(Debug, Clone)]
pub struct Flag {
    /// Where it goes in `--help` (after `--config`).
    pub order: usize,
    /// `--long`, without the dashes.
    pub long: &'static str,
    /// `-s`.
    pub short: Option<char>,
    /// The value's name in `--help` (empty for a switch).
    pub value: &'static str,
    /// Its line in `--help`.
    pub help: &'static str,
    /// Sets the action and value parser its type needs.
    pub shape: fn(Arg) -> Arg,
}

impl Flag {
    /// The clap argument.
    pub fn arg(&self) -> Arg {
        let mut a = Arg::new(self.long).long(self.long).help(self.help).display_order(self.order);
        if let Some(s) = self.short {
            a = a.short(s);
        }
        if !self.value.is_empty() {
            a = a.value_name(self.value);
        }
        (self.shape)(a)
    }
}

/// A section: its name and the note on its header.
#[derive(Debug, Clone, Copy)]
pub struct SectionDoc {
    /// `server`, `cache`, ...
    pub name: &'static str,
    /// What the whole section is about ("" when its keys say it all).
    pub note: &'static str,
}

/// Which settings the command line replaced, so that an error names what
/// the user wrote: `--listen[0]` rather than `server.listen[0]`.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    from_flags: Vec<(&'static str, &'static str)>,
}

impl Origins {
    /// `key` (`section.key`) was replaced by `flag` (`--flag`).
    pub fn set(&mut self, key: &'static str, flag: &'static str) {
        self.from_flags.push((key, flag));
    }

    /// The name to report for `key`: its flag when the command line gave it.
    pub fn key(&self, key: &'static str) -> &'static str {
        self.from_flags.iter().find(|(k, _)| *k == key).map_or(key, |(_, f)| f)
    }

    /// Whether the command line gave `key`.
    pub fn given_by_flag(&self, key: &str) -> bool {
        self.from_flags.iter().any(|(k, _)| *k == key)
    }
}

/// A setting's type as a command-line value: the clap action and parser,
/// and the value taken from the parsed arguments (`None`: not given, the
/// file's value stays).
pub trait FlagValue: Sized {
    /// Sets the action and the value parser.
    fn shape(a: Arg) -> Arg;
    /// The value given for `--id`, if any.
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError>;
}

impl FlagValue for String {
    fn shape(a: Arg) -> Arg {
        a.action(ArgAction::Set)
    }
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError> {
        Ok(m.get_one::<String>(id).cloned())
    }
}

impl FlagValue for bool {
    fn shape(a: Arg) -> Arg {
        a.action(ArgAction::SetTrue)
    }
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError> {
        Ok(m.get_flag(id).then_some(true))
    }
}

impl FlagValue for usize {
    fn shape(a: Arg) -> Arg {
        a.action(ArgAction::Set).value_parser(clap::value_parser!(usize))
    }
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError> {
        Ok(m.get_one::<usize>(id).copied())
    }
}

impl FlagValue for Option<u32> {
    fn shape(a: Arg) -> Arg {
        a.action(ArgAction::Set).value_parser(clap::value_parser!(u32))
    }
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError> {
        Ok(m.get_one::<u32>(id).map(|v| Some(*v)))
    }
}

/// A repeatable flag replaces the whole list (none given: the file's list).
impl FlagValue for Vec<String> {
    fn shape(a: Arg) -> Arg {
        a.action(ArgAction::Append)
    }
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError> {
        Ok(m.get_many::<String>(id).map(|v| v.cloned().collect()))
    }
}

/// `--workers N|auto`: checked with the file's value, when settled.
impl FlagValue for Workers {
    fn shape(a: Arg) -> Arg {
        a.action(ArgAction::Set)
    }
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError> {
        Ok(m.get_one::<String>(id).map(|w| Workers::Word(w.clone())))
    }
}

/// `--backend addr[:port][@weight]`, repeatable.
impl FlagValue for Vec<BackendEntry> {
    fn shape(a: Arg) -> Arg {
        a.action(ArgAction::Append)
    }
    fn take(m: &ArgMatches, id: &'static str) -> Result<Option<Self>, ConfigError> {
        let Some(values) = m.get_many::<String>(id) else { return Ok(None) };
        let mut out = Vec::new();
        for (i, b) in values.enumerate() {
            let entry = match b.rsplit_once('@') {
                Some((a, w)) => w.parse().ok().map(|weight| BackendEntry::Table { address: a.into(), weight }),
                None => Some(BackendEntry::Addr(b.clone())),
            };
            out.push(entry.ok_or_else(|| ConfigError::new(format!("--{id}[{i}]"), format!("'{b}' is not addr[:port][@weight]")))?);
        }
        Ok(Some(out))
    }
}

/// The words a setting accepts, in the order the documentation lists them.
pub trait Words {
    /// The accepted words.
    fn words(&self) -> Vec<&'static str>;
}

impl<const N: usize> Words for [&'static str; N] {
    fn words(&self) -> Vec<&'static str> {
        self.to_vec()
    }
}

impl<T, const N: usize> Words for [(&'static str, T); N] {
    fn words(&self) -> Vec<&'static str> {
        self.iter().map(|(w, _)| *w).collect()
    }
}

impl<const N: usize> Words for [kdns_core::engine::OverLimit; N] {
    fn words(&self) -> Vec<&'static str> {
        self.iter().map(|o| o.name()).collect()
    }
}

/// `value` is one of `words`, or an error naming `key`.
pub fn check_word(key: &str, value: &str, words: &dyn Words) -> Result<(), ConfigError> {
    let words = words.words();
    if words.contains(&value) {
        return Ok(());
    }
    let list = match words.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(ConfigError::new(key, format!("'{value}': expected {list}")))
}

/// The value paired with `word` in a word table. The table's check has
/// refused every other word before this is asked, so callers' fallbacks
/// are never taken.
pub fn pick<T: Copy>(table: &[(&'static str, T)], word: &str) -> Option<T> {
    table.iter().find(|(w, _)| *w == word).map(|(_, t)| *t)
}

/// Defines every setting once. Each section becomes a `Deserialize`
/// struct refusing unknown keys, with a `Default` from the table; each
/// key may carry a range (`range(lo, hi)`, `at_least(lo)`), a word list
/// (`words(LIST)`), the default as documented when it is not the plain
/// value (`shown(expr)`), a value `--help` shows instead (`example(..)`), and a command-line flag
/// (`flag(order, "long", short, "VALUE", "help")`). From the same lines
/// come `FileConfig::check` (ranges and words, naming the key or the flag
/// that set it), `FileConfig::apply_flags`, `flags()` for clap, and
/// `keys()` for `--help` and the README.
macro_rules! settings {
    ($(
        [$sec:ident] $Section:ident $note:literal {
            $(
                $(#[$attr:meta])*
                $field:ident : $ty:ty = $default:expr
                $(, range($lo:expr, $hi:expr))?
                $(, at_least($min:expr))?
                $(, words($words:expr))?
                $(, shown($shown:expr))?
                $(, example($example:literal))?
                $(, flag($order:literal, $long:literal, $short:expr, $value:literal, $help:literal))?
                => $doc:literal;
            )*
        }
    )*) => {
        $(
            #[doc = concat!("`[", stringify!($sec), "]` ", $note)]
            #[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
            #[serde(deny_unknown_fields, default)]
            pub struct $Section {
                $(
                    #[doc = $doc]
                    $(#[$attr])*
                    pub $field: $ty,
                )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    $Section { $($field: $default,)* }
                }
            }

            impl $Section {
                fn check(&self, names: &$crate::config::define::Origins) -> Result<(), $crate::config::ConfigError> {
                    $(
                        let key = names.key(concat!(stringify!($sec), ".", stringify!($field)));
                        $(
                            let (lo, hi) = ($lo, $hi);
                            if !(lo..=hi).contains(&self.$field) {
                                return Err($crate::config::ConfigError::new(key, format!("{} is outside {lo}..={hi}", self.$field)));
                            }
                        )?
                        $(
                            if self.$field < $min {
                                return Err($crate::config::ConfigError::new(key, format!("{} is below the minimum, {}", self.$field, $min)));
                            }
                        )?
                        $($crate::config::define::check_word(key, &self.$field, &$words)?;)?
                        let _ = key;
                    )*
                    Ok(())
                }
            }
        )*

        /// The file, as written, with the command line's values put in.
        /// Every key has a default.
        #[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct FileConfig {
            $(
                #[doc = concat!("`[", stringify!($sec), "]`")]
                pub $sec: $Section,
            )*
        }

        impl FileConfig {
            /// Checks the ranges and words of the table, naming the key
            /// (or the flag that set it).
            pub fn check(&self, names: &$crate::config::define::Origins) -> Result<(), $crate::config::ConfigError> {
                $(self.$sec.check(names)?;)*
                Ok(())
            }

            /// Puts the command line's values in place of the file's, and
            /// says which keys they replaced.
            pub fn apply_flags(&mut self, m: &clap::ArgMatches) -> Result<$crate::config::define::Origins, $crate::config::ConfigError> {
                let mut origins = $crate::config::define::Origins::default();
                $($($(
                    let _ = $order;
                    if let Some(v) = <$ty as $crate::config::define::FlagValue>::take(m, $long)? {
                        self.$sec.$field = v;
                        origins.set(concat!(stringify!($sec), ".", stringify!($field)), concat!("--", $long));
                    }
                )?)*)*
                Ok(origins)
            }
        }

        /// The sections, in file order.
        pub const SECTIONS: &[$crate::config::define::SectionDoc] =
            &[$($crate::config::define::SectionDoc { name: stringify!($sec), note: $note },)*];

        /// Every setting, in file order.
        pub fn keys() -> Vec<$crate::config::define::Key> {
            vec![$($(
                $crate::config::define::Key {
                    section: stringify!($sec),
                    name: stringify!($field),
                    doc: $doc,
                    range: None $(.or(Some(format!("{}..={}", $lo, $hi))))? $(.or(Some(format!("at least {}", $min))))?,
                    words: None $(.or(Some($crate::config::define::Words::words(&$words))))?,
                    shown: None $(.or(Some(($shown).to_string())))?,
                    example: None $(.or(Some($example)))?,
                    flag: None $(.or(Some($crate::config::define::Flag {
                        order: $order,
                        long: $long,
                        short: $short,
                        value: $value,
                        help: $help,
                        shape: <$ty as $crate::config::define::FlagValue>::shape,
                    })))?,
                },
            )*)*]
        }
    };
}

pub(crate) use settings;
