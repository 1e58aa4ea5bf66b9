//! Named option sets (`IMGPROXY_PRESETS`, `IMGPROXY_PRESETS_PATH`), stored as
//! option segments and applied by the URL parser like URL options.

use std::collections::BTreeMap;

/// `IMGPROXY_PRESETS_SEPARATOR`: separates the definitions in `IMGPROXY_PRESETS`.
pub const DEFAULT_PRESETS_SEPARATOR: &str = ",";

/// The preset every request starts from when it is defined.
pub const DEFAULT_PRESET: &str = "default";

/// A preset definition that can't be used; reported at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    #[error("preset definition `{0}` must look like `name=option/option`")]
    Syntax(String),
    #[error("preset definition `{0}` has an empty name")]
    EmptyName(String),
    #[error("preset definition `{0}` has no options")]
    EmptyValue(String),
    /// Every segment of a preset must be an option; a source can't be preset.
    #[error("preset definition `{0}` contains a segment that is not an option")]
    NotAnOption(String),
}

/// Configured presets by name. A later definition of the same name replaces
/// an earlier one, as in imgproxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presets {
    by_name: BTreeMap<String, Vec<String>>,
}

impl Presets {
    /// Adds the definitions of `IMGPROXY_PRESETS` (`name=opt/opt,name2=...`).
    ///
    /// # Errors
    /// The first malformed definition.
    pub fn add_list(
        &mut self,
        list: &str,
        list_separator: &str,
        arguments_separator: &str,
    ) -> Result<(), PresetError> {
        list.split(list_separator)
            .try_for_each(|def| self.add(def, arguments_separator))
    }

    /// Adds the contents of an `IMGPROXY_PRESETS_PATH` file: one definition a
    /// line; blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// The first malformed definition.
    pub fn add_file(
        &mut self,
        contents: &str,
        arguments_separator: &str,
    ) -> Result<(), PresetError> {
        contents
            .lines()
            .try_for_each(|def| self.add(def, arguments_separator))
    }

    fn add(&mut self, definition: &str, arguments_separator: &str) -> Result<(), PresetError> {
        let def = definition.trim_matches(' ');
        if def.is_empty() || def.starts_with('#') {
            return Ok(());
        }
        let mut halves = def.split('=');
        let (Some(name), Some(value), None) = (halves.next(), halves.next(), halves.next()) else {
            return Err(PresetError::Syntax(def.to_owned()));
        };
        let (name, value) = (name.trim_matches(' '), value.trim_matches(' '));
        if name.is_empty() {
            return Err(PresetError::EmptyName(def.to_owned()));
        }
        if value.is_empty() {
            return Err(PresetError::EmptyValue(def.to_owned()));
        }
        let segments: Vec<String> = value.split('/').map(str::to_owned).collect();
        if segments.iter().any(|s| !s.contains(arguments_separator)) {
            return Err(PresetError::NotAnOption(def.to_owned()));
        }
        self.by_name.insert(name.to_owned(), segments);
        Ok(())
    }

    /// The option segments of preset `name`.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.by_name.get(name).map(Vec::as_slice)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &str) -> Result<Presets, PresetError> {
        let mut p = Presets::default();
        p.add_list(list, DEFAULT_PRESETS_SEPARATOR, ":")?;
        Ok(p)
    }

    #[test]
    fn parses_env_list() {
        let p = parse("thumb=rs:fill:100:100/q:70, blurry = bl:5 ").unwrap();
        assert_eq!(p.get("thumb").unwrap(), ["rs:fill:100:100", "q:70"]);
        assert_eq!(p.get("blurry").unwrap(), ["bl:5"]);
        assert_eq!(p.get("none"), None);
        assert_eq!(p.names().collect::<Vec<_>>(), ["blurry", "thumb"]);
    }

    #[test]
    fn later_definition_wins_and_file_adds() {
        let mut p = parse("a=q:10").unwrap();
        p.add_file("# comment\n\n  a=q:20\nb=w:5\n", ":").unwrap();
        assert_eq!(p.get("a").unwrap(), ["q:20"]);
        assert_eq!(p.get("b").unwrap(), ["w:5"]);
    }

    #[test]
    fn custom_separators() {
        let mut p = Presets::default();
        p.add_list("a=s,1,2;b=q,5", ";", ",").unwrap();
        assert_eq!(p.get("a").unwrap(), ["s,1,2"]);
        assert_eq!(p.get("b").unwrap(), ["q,5"]);
    }

    #[test]
    fn rejects_malformed_definitions() {
        assert_eq!(
            parse("rs:fill:1"),
            Err(PresetError::Syntax("rs:fill:1".into()))
        );
        assert_eq!(parse("a=b=c:1"), Err(PresetError::Syntax("a=b=c:1".into())));
        assert_eq!(parse("=q:1"), Err(PresetError::EmptyName("=q:1".into())));
        assert_eq!(parse("a="), Err(PresetError::EmptyValue("a=".into())));
        assert_eq!(
            parse("a=q:1/blur"),
            Err(PresetError::NotAnOption("a=q:1/blur".into()))
        );
        assert_eq!(
            parse("a=q:1/"),
            Err(PresetError::NotAnOption("a=q:1/".into()))
        );
        // Blank entries (e.g. a trailing comma) are skipped, like comments.
        assert_eq!(parse("a=q:1,,#b=q:2,").unwrap().names().count(), 1);
    }
}
