//! Dataset conditions: which combination of updated datasets triggers a job.
//!
//! A TOML list means all-of; a string is an expression over dataset URIs with `&` (and), `|` (or) and
//! parentheses, `&` binding tighter, e.g. `snowpatrol://a & (snowpatrol://b | snowpatrol://c)`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DatasetSpec {
    AllOf(Vec<String>),
    Expression(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Dataset(String),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message} at character {position} of `{expression}`")]
pub struct ConditionError {
    pub expression: String,
    pub position: usize,
    pub message: String,
}

impl Condition {
    pub fn from_spec(spec: &DatasetSpec) -> Result<Self, ConditionError> {
        match spec {
            DatasetSpec::AllOf(list) => {
                if list.is_empty() {
                    return Err(ConditionError {
                        expression: "[]".into(),
                        position: 0,
                        message: "an empty dataset list never triggers; remove `datasets` for a manual-only job".into(),
                    });
                }
                let mut leaves = Vec::new();
                for uri in list {
                    let cond = Self::parse(uri)?;
                    leaves.push(cond);
                }
                Ok(if leaves.len() == 1 {
                    leaves.remove(0)
                } else {
                    Condition::All(leaves)
                })
            }
            DatasetSpec::Expression(expr) => Self::parse(expr),
        }
    }

    pub fn parse(expr: &str) -> Result<Self, ConditionError> {
        let mut p = Parser { src: expr, pos: 0 };
        let cond = p.parse_or()?;
        p.skip_ws();
        if p.pos < expr.len() {
            return Err(p.error("unexpected input (expected `&`, `|` or end)"));
        }
        Ok(cond)
    }

    pub fn is_satisfied(&self, updated: &BTreeSet<String>) -> bool {
        match self {
            Condition::Dataset(uri) => updated.contains(uri),
            Condition::All(c) => c.iter().all(|c| c.is_satisfied(updated)),
            Condition::Any(c) => c.iter().any(|c| c.is_satisfied(updated)),
        }
    }

    pub fn datasets(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.collect(&mut out);
        out.into_iter().collect()
    }

    fn collect(&self, out: &mut BTreeSet<String>) {
        match self {
            Condition::Dataset(u) => {
                out.insert(u.clone());
            }
            Condition::All(c) | Condition::Any(c) => c.iter().for_each(|c| c.collect(out)),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Dataset(u) => f.write_str(u),
            Condition::All(c) | Condition::Any(c) => {
                let sep = if matches!(self, Condition::All(_)) {
                    " & "
                } else {
                    " | "
                };
                let parts: Vec<String> = c
                    .iter()
                    .map(|c| match c {
                        Condition::Dataset(_) => c.to_string(),
                        _ => format!("({c})"),
                    })
                    .collect();
                f.write_str(&parts.join(sep))
            }
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> ConditionError {
        ConditionError {
            expression: self.src.to_string(),
            position: self.pos,
            message: message.to_string(),
        }
    }
    fn skip_ws(&mut self) {
        while self.src[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.src[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }
    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.src[self.pos..].starts_with(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn parse_or(&mut self) -> Result<Condition, ConditionError> {
        let mut parts = vec![self.parse_and()?];
        while self.eat('|') {
            parts.push(self.parse_and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::Any(parts)
        })
    }
    fn parse_and(&mut self) -> Result<Condition, ConditionError> {
        let mut parts = vec![self.parse_atom()?];
        while self.eat('&') {
            parts.push(self.parse_atom()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::All(parts)
        })
    }
    fn parse_atom(&mut self) -> Result<Condition, ConditionError> {
        if self.eat('(') {
            let inner = self.parse_or()?;
            if !self.eat(')') {
                return Err(self.error("missing `)`"));
            }
            return Ok(inner);
        }
        self.skip_ws();
        let start = self.pos;
        let rest = &self.src[start..];
        let len = rest
            .find(|c: char| c.is_whitespace() || "&|()".contains(c))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a dataset URI or `(`"));
        }
        let uri = &rest[..len];
        if !uri.contains("://") {
            return Err(self.error(&format!(
                "`{uri}` is not a dataset URI (expected scheme://path)"
            )));
        }
        self.pos += len;
        Ok(Condition::Dataset(uri.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_and_parentheses() {
        let c = Condition::parse("x://a & (x://b | x://c)").unwrap();
        assert!(!c.is_satisfied(&set(&["x://a"])));
        assert!(c.is_satisfied(&set(&["x://a", "x://c"])));
        assert!(!c.is_satisfied(&set(&["x://b", "x://c"])));
        let d = Condition::parse("x://a & x://b | x://c").unwrap();
        assert!(d.is_satisfied(&set(&["x://c"])));
        assert_eq!(d.to_string(), "(x://a & x://b) | x://c");
    }

    #[test]
    fn list_is_all_of() {
        let c = Condition::from_spec(&DatasetSpec::AllOf(vec!["x://a".into(), "x://b".into()]))
            .unwrap();
        assert!(!c.is_satisfied(&set(&["x://a"])));
        assert!(c.is_satisfied(&set(&["x://a", "x://b"])));
        assert_eq!(c.datasets(), vec!["x://a".to_string(), "x://b".to_string()]);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = Condition::parse("x://a & (x://b | x://c").unwrap_err();
        assert!(e.message.contains("missing `)`"), "{e}");
        let e = Condition::parse("x://a && x://b").unwrap_err();
        assert_eq!(e.position, 7, "{e}");
        assert!(
            Condition::parse("features")
                .unwrap_err()
                .message
                .contains("not a dataset URI")
        );
    }
}
