//! Column naming: sanitizing payload-provided names and choosing the names
//! of generated columns for requests and responses.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// Turns an arbitrary payload name into a Delta Lake friendly column name.
///
/// Delta Lake without column mapping rejects ` ,;{}()\n\t=` in column names,
/// and SQL users prefer unquoted lowercase identifiers, so the name is
/// lowercased (ASCII), every run of characters outside `[a-z0-9_]` becomes a
/// single `_`, and leading/trailing `_` are trimmed. An empty result becomes
/// `col` and a result starting with a digit gets a `c_` prefix.
///
/// ```
/// use inferlog_payload::sanitize_column_name;
/// assert_eq!(sanitize_column_name("sepal length (cm)"), "sepal_length_cm");
/// assert_eq!(sanitize_column_name("Petal.Width"), "petal_width");
/// assert_eq!(sanitize_column_name("0"), "c_0");
/// ```
pub fn sanitize_column_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_run = false;
    for c in raw.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "col".to_owned()
    } else if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        format!("c_{trimmed}")
    } else {
        trimmed.to_owned()
    }
}

/// Makes column names unique by appending `_2`, `_3`, ... to later
/// duplicates, skipping suffixes that are already taken.
pub(crate) fn make_unique(names: Vec<String>) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::with_capacity(names.len());
    // Next suffix to try per base name, so many duplicates stay linear.
    let mut next_suffix: HashMap<String, usize> = HashMap::new();
    names
        .into_iter()
        .map(|name| {
            if !used.contains(&name) {
                used.insert(name.clone());
                return name;
            }
            let suffix = next_suffix.entry(name.clone()).or_insert(2);
            loop {
                let candidate = format!("{name}_{suffix}");
                *suffix += 1;
                if used.insert(candidate.clone()) {
                    return candidate;
                }
            }
        })
        .collect()
}

/// Which body is being parsed; decides the generated column names and the
/// wording of error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

impl Side {
    /// The single column of a list of scalars: `input` / `prediction`.
    pub(crate) fn scalar(self) -> String {
        match self {
            Side::Request => "input".to_owned(),
            Side::Response => "prediction".to_owned(),
        }
    }

    /// The `i`-th column of a list of lists: `input_{i}` / `prediction_{i}`.
    pub(crate) fn positional(self, i: usize) -> String {
        format!("{}_{i}", self.scalar())
    }

    /// What a v2 tensor is called on this side: `input` / `output`.
    pub(crate) fn tensor_role(self) -> &'static str {
        match self {
            Side::Request => "input",
            Side::Response => "output",
        }
    }

    /// A column named by the payload: `{key}` / `prediction_{key}`, sanitized.
    pub(crate) fn keyed(self, raw: &str) -> String {
        let name = sanitize_column_name(raw);
        match self {
            Side::Request => name,
            Side::Response => format!("prediction_{name}"),
        }
    }

    /// A column of a v2 tensor. `element` is set when the tensor has more
    /// than one element per row; `only_tensor` when it is the only tensor of
    /// the body (a lone response tensor is simply `prediction`).
    pub(crate) fn tensor(self, name: &str, element: Option<usize>, only_tensor: bool) -> String {
        let base = match self {
            Side::Response if only_tensor => self.scalar(),
            _ => self.keyed(name),
        };
        match element {
            Some(j) => format!("{base}_{j}"),
            None => base,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Request => "request",
            Side::Response => "response",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_spec_examples() {
        assert_eq!(sanitize_column_name("sepal length (cm)"), "sepal_length_cm");
        assert_eq!(sanitize_column_name("Petal.Width"), "petal_width");
        assert_eq!(sanitize_column_name("input-0"), "input_0");
    }

    #[test]
    fn sanitizes_edge_cases() {
        assert_eq!(sanitize_column_name(""), "col");
        assert_eq!(sanitize_column_name("(){}"), "col");
        assert_eq!(sanitize_column_name("__"), "col");
        assert_eq!(sanitize_column_name("0"), "c_0");
        assert_eq!(sanitize_column_name("1st place"), "c_1st_place");
        assert_eq!(sanitize_column_name("a = b;\tc\n"), "a_b_c");
        assert_eq!(sanitize_column_name("Température"), "temp_rature");
        assert_eq!(sanitize_column_name("keep__double"), "keep__double");
        assert_eq!(sanitize_column_name("_x_"), "x");
    }

    #[test]
    fn duplicates_get_numbered_suffixes() {
        let names = ["a", "b", "a", "a", "a_2"].map(String::from).to_vec();
        assert_eq!(make_unique(names), ["a", "b", "a_2", "a_3", "a_2_2"]);
    }

    #[test]
    fn many_duplicates_stay_unique() {
        let names = vec!["x".to_owned(); 10_000];
        let unique = make_unique(names);
        assert_eq!(unique.len(), 10_000);
        assert_eq!(unique.iter().collect::<HashSet<_>>().len(), 10_000);
        assert_eq!(unique[9_999], "x_10000");
    }

    #[test]
    fn generated_names_per_side() {
        assert_eq!(Side::Request.positional(3), "input_3");
        assert_eq!(
            Side::Response.keyed("Class Label"),
            "prediction_class_label"
        );
        assert_eq!(Side::Request.tensor("input-0", Some(2), true), "input_0_2");
        assert_eq!(
            Side::Response.tensor("probs", Some(1), true),
            "prediction_1"
        );
        assert_eq!(
            Side::Response.tensor("probs", None, false),
            "prediction_probs"
        );
    }
}
