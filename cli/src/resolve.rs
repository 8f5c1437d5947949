//! Accepting a unique prefix of a workspace id wherever an id is accepted.
//!
//! A full UUID is used as is (no listing needed); anything shorter is matched against the ids
//! the user can see. Pure: the caller fetches the list.

use uuid::Uuid;

use crate::error::CliError;

/// A full id, or a prefix to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdArg {
    Full(Uuid),
    Prefix(String),
}

impl IdArg {
    pub fn parse(arg: &str) -> Result<IdArg, CliError> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Err(CliError::Usage("a workspace id must not be empty".into()));
        }
        match Uuid::parse_str(arg) {
            Ok(id) => Ok(IdArg::Full(id)),
            Err(_) => Ok(IdArg::Prefix(arg.to_ascii_lowercase())),
        }
    }
}

/// Picks the one id among `ids` that starts with `prefix`.
pub fn resolve_prefix(prefix: &str, ids: impl IntoIterator<Item = Uuid>) -> Result<Uuid, CliError> {
    let prefix = prefix.to_ascii_lowercase();
    let mut matches: Vec<Uuid> = ids
        .into_iter()
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    matches.sort();
    matches.dedup();
    match matches.as_slice() {
        [] => Err(CliError::NotFound(format!(
            "no workspace id starts with {prefix:?} (see `aether workspace list`)"
        ))),
        [one] => Ok(*one),
        many => {
            let list: Vec<String> = many.iter().map(Uuid::to_string).collect();
            Err(CliError::Ambiguous(format!(
                "{prefix:?} matches {} workspaces ({}); type more of the id",
                many.len(),
                list.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    #[test]
    fn full_ids_need_no_lookup() {
        let full = "3f2b8c1e-0000-4000-8000-000000000001";
        assert_eq!(IdArg::parse(full).unwrap(), IdArg::Full(id(full)));
        assert_eq!(
            IdArg::parse("3F2B").unwrap(),
            IdArg::Prefix("3f2b".to_owned())
        );
        assert!(IdArg::parse("  ").is_err());
    }

    #[test]
    fn unique_ambiguous_and_missing_prefixes() {
        let a = id("3f2b8c1e-0000-4000-8000-000000000001");
        let b = id("3f2c0000-0000-4000-8000-000000000002");
        assert_eq!(resolve_prefix("3f2b", [a, b]).unwrap(), a);
        assert_eq!(resolve_prefix("3F2C", [a, b]).unwrap(), b);
        let err = resolve_prefix("3f2", [a, b]).unwrap_err();
        assert!(matches!(err, CliError::Ambiguous(_)), "{err:?}");
        assert!(err.to_string().contains(&a.to_string()));
        let err = resolve_prefix("ff", [a, b]).unwrap_err();
        assert!(matches!(err, CliError::NotFound(_)), "{err:?}");
        // A prefix may include the hyphen.
        assert_eq!(resolve_prefix("3f2b8c1e-0", [a, b]).unwrap(), a);
    }
}
