//! The one settings kit: what the proxy's ([`crate::proxy::config`]) and the worker's
//! (`worker::config`, when built) settings are read and described with.
//!
//! - [`Setting`]: a row of a settings table, which feeds `--help` and the README.
//! - [`SettingsError`]: why start-up stops, naming the variable, the value and the reason.
//! - [`FromVars`]: the one way a config is built, from the process environment
//!   (`from_env`) or, in tests, from pairs (`from_vars`), through [`read`].
//! - [`expand_bind`] and the parsers both configs share, so a value means the same thing
//!   whichever half of the program reads it.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// One row of a settings table: variable, default, meaning. `compat` is an extra column for
/// tables that need one (the worker's says how closely a variable follows imgproxy); the
/// proxy's has nothing to compare with and leaves it `()`.
pub struct Setting<C = ()> {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
    pub compat: C,
}

/// A row with no extra column.
pub const fn row(name: &'static str, default: &'static str, meaning: &'static str) -> Setting {
    Setting {
        name,
        default,
        meaning,
        compat: (),
    }
}

impl Setting {
    /// The same row with `compat` as its extra column.
    pub const fn with_compat<C>(self, compat: C) -> Setting<C> {
        Setting {
            name: self.name,
            default: self.default,
            meaning: self.meaning,
            compat,
        }
    }
}

/// A setting that could not be used. Each message names the variable, so whoever reads the
/// start-up failure knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value `envy` could not read as its field's type; envy's message names the variable.
    #[error("{0}")]
    Env(#[from] envy::Error),
    /// A value that was read but cannot be used.
    #[error("{var}={value:?} is not valid: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
    /// A value refused by the part that uses it, whose message names the variable and keeps
    /// the value out (signing keys must never reach a log).
    #[error("{0}")]
    Refused(String),
}

/// [`SettingsError::Invalid`] for `var=value`.
pub fn invalid(var: &'static str, value: &str, why: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        var,
        value: value.to_owned(),
        why: why.into(),
    }
}

/// A config read from environment variables. Tests build one with `from_vars`, so they never
/// touch the process environment.
pub trait FromVars: Sized {
    /// Reads settings from `(NAME, value)` pairs.
    ///
    /// # Errors
    /// A variable that cannot be parsed or fails validation.
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, SettingsError>;

    /// Reads the process environment.
    ///
    /// # Errors
    /// A variable that cannot be parsed or fails validation.
    fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(std::env::vars())
    }
}

/// The raw schema `E` (field `foo_bar` is variable `FOO_BAR`) from `vars`. Empty values count
/// as unset, as in a shell's `FOO= cmd`, an env file's `FOO=` and imgproxy, except for the
/// variables in `empty_allowed`, whose empty value means something.
///
/// # Errors
/// [`SettingsError::Env`] for a value that does not fit its field's type.
pub fn read<E: DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
    empty_allowed: &[&str],
) -> Result<E, SettingsError> {
    let vars = vars
        .into_iter()
        .filter(|(k, v)| !v.is_empty() || empty_allowed.contains(&k.as_str()));
    Ok(envy::from_iter(vars)?)
}

/// `:8080` → `0.0.0.0:8080` (Go's meaning, which imgproxy and the Go sidecar share); anything
/// else must be `HOST:PORT`, and a bracketed host a valid IPv6 socket address.
///
/// # Errors
/// [`SettingsError::Invalid`] naming `var` when the address has no port, a port that is not a
/// number from 0 to 65535, or a malformed IPv6 address.
pub fn expand_bind(var: &'static str, raw: &str) -> Result<String, SettingsError> {
    let addr = match raw.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => raw.to_owned(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .ok_or_else(|| invalid(var, raw, "expected HOST:PORT or :PORT"))?;
    if port.parse::<u16>().is_err() {
        return Err(invalid(
            var,
            raw,
            "the port is not a number from 0 to 65535",
        ));
    }
    if host.starts_with('[') && addr.parse::<SocketAddr>().is_err() {
        return Err(invalid(var, raw, "not a valid IPv6 socket address"));
    }
    Ok(addr)
}

/// Go's `strconv.ParseBool` words, which imgproxy accepts.
///
/// # Errors
/// [`SettingsError::Invalid`] for any other word.
pub fn boolean(var: &'static str, raw: Option<&str>, default: bool) -> Result<bool, SettingsError> {
    match raw {
        None => Ok(default),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(invalid(var, other, "expected true or false")),
    }
}

/// A whole number (a count or a size in bytes), spaces around it ignored.
///
/// # Errors
/// [`SettingsError::Invalid`] when the text is not a number of type `T`.
pub fn number<T: FromStr>(
    var: &'static str,
    raw: Option<&str>,
    default: T,
) -> Result<T, SettingsError> {
    parsed(
        var,
        raw,
        default,
        |_| true,
        "expected a non-negative whole number",
    )
}

/// A `T` read from text with spaces around it ignored, and kept only when `fits`; otherwise
/// the error says what was `expected`.
///
/// # Errors
/// [`SettingsError::Invalid`] when the text is not a `T` or the value does not fit.
pub fn parsed<T: FromStr>(
    var: &'static str,
    raw: Option<&str>,
    default: T,
    fits: impl Fn(&T) -> bool,
    expected: &'static str,
) -> Result<T, SettingsError> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse()
            .ok()
            .filter(|v| fits(v))
            .ok_or_else(|| invalid(var, s, expected)),
    }
}

/// A count or size that must not be 0 (a limit of nothing would refuse everything).
///
/// # Errors
/// [`SettingsError::Invalid`] for 0.
pub fn positive<T: PartialEq + From<u8>>(var: &'static str, n: T) -> Result<T, SettingsError> {
    if n == T::from(0) {
        return Err(invalid(var, "0", "must be at least 1"));
    }
    Ok(n)
}

/// A number of seconds that must not be 0 (a deadline of nothing would fail every request).
///
/// # Errors
/// [`SettingsError::Invalid`] for 0.
pub fn seconds(var: &'static str, secs: u64) -> Result<Duration, SettingsError> {
    match secs {
        0 => Err(invalid(var, "0", "must be at least 1 second")),
        n => Ok(Duration::from_secs(n)),
    }
}

/// The items of a comma-separated list, trimmed, empty ones dropped.
pub fn list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_expand_like_go_and_the_stricter_checks_apply() {
        assert_eq!(expand_bind("V", ":8080").unwrap(), "0.0.0.0:8080");
        assert_eq!(
            expand_bind("V", "127.0.0.1:8081").unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(expand_bind("V", "[::1]:80").unwrap(), "[::1]:80");
        assert_eq!(expand_bind("V", "localhost:80").unwrap(), "localhost:80");
        for bad in [
            "localhost",
            ":",
            "",
            "host:99999",
            "host:http",
            "[::1:80",
            "[nope]:80",
        ] {
            let msg = expand_bind("V", bad).unwrap_err().to_string();
            assert!(
                msg.starts_with("V=") && msg.contains(&format!("{bad:?}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn parsers_name_the_variable_and_the_value() {
        assert!(boolean("V", Some("T"), false).unwrap());
        assert!(!boolean("V", None, false).unwrap());
        assert!(boolean("V", Some("yes"), false).is_err());
        assert_eq!(number::<u32>("V", Some(" 7 "), 1).unwrap(), 7);
        assert_eq!(number::<u32>("V", None, 1).unwrap(), 1);
        let msg = number::<u32>("V", Some("-1"), 1).unwrap_err().to_string();
        assert!(msg.contains("V=\"-1\""), "{msg}");
        assert!(positive("V", 0usize).is_err() && positive("V", 3u64).unwrap() == 3);
        assert!(seconds("V", 0).is_err());
        assert_eq!(seconds("V", 2).unwrap(), Duration::from_secs(2));
        assert_eq!(list(" a, ,b,").collect::<Vec<_>>(), ["a", "b"]);
    }
}
