//! Typed job parameters. Types are declared (in code or TOML) so a wrong value is refused before a run exists.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Bool,
    Int,
    Float,
    String,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Bool => "bool",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::String => "string",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamType,
    pub default: Value,
    pub description: String,
}

impl ParamSpec {
    pub fn new(name: &str, ty: ParamType, default: Value, description: &str) -> Self {
        Self {
            name: name.into(),
            ty,
            default,
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    #[error("unknown parameter `{name}` for job `{job}`; declared parameters: {declared}")]
    Unknown {
        job: String,
        name: String,
        declared: String,
    },
    #[error("parameter `{name}` of job `{job}` must be {ty}, got `{value}`")]
    WrongType {
        job: String,
        name: String,
        ty: ParamType,
        value: String,
    },
    #[error("expected NAME=VALUE, got `{0}`")]
    Syntax(String),
}

/// Checks that a JSON value has the declared type (an int is accepted where a float is declared).
pub fn coerce_value(ty: ParamType, v: &Value) -> Option<Value> {
    match (ty, v) {
        (ParamType::Bool, Value::Bool(_)) | (ParamType::String, Value::String(_)) => {
            Some(v.clone())
        }
        (ParamType::Int, Value::Number(n)) if n.is_i64() => Some(v.clone()),
        (ParamType::Float, Value::Number(n)) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        _ => None,
    }
}

/// Parses a command-line value by the declared type.
pub fn parse_value(ty: ParamType, raw: &str) -> Option<Value> {
    match ty {
        ParamType::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Some(Value::Bool(true)),
            "false" | "no" | "0" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        ParamType::Int => raw.parse::<i64>().ok().map(Value::from),
        ParamType::Float => raw
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        ParamType::String => Some(Value::String(raw.to_string())),
    }
}

/// The declared parameters of a job, with effective defaults.
#[derive(Clone, Debug, Default)]
pub struct ParamSchema {
    pub job: String,
    pub specs: BTreeMap<String, ParamSpec>,
}

impl ParamSchema {
    pub fn defaults(&self) -> Value {
        Value::Object(
            self.specs
                .iter()
                .map(|(k, s)| (k.clone(), s.default.clone()))
                .collect(),
        )
    }

    fn declared(&self) -> String {
        if self.specs.is_empty() {
            "(none)".into()
        } else {
            self.specs
                .values()
                .map(|s| format!("{}: {}", s.name, s.ty))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Defaults overlaid with `NAME=VALUE` overrides, each checked against its declared type.
    pub fn resolve_cli(&self, overrides: &[String]) -> Result<Value, ParamError> {
        let mut pairs = Vec::new();
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ParamError::Syntax(o.clone()))?;
            pairs.push((k.trim().to_string(), v.to_string()));
        }
        let mut values = match self.defaults() {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        for (k, raw) in pairs {
            let spec = self.specs.get(&k).ok_or_else(|| ParamError::Unknown {
                job: self.job.clone(),
                name: k.clone(),
                declared: self.declared(),
            })?;
            let v = parse_value(spec.ty, &raw).ok_or_else(|| ParamError::WrongType {
                job: self.job.clone(),
                name: k.clone(),
                ty: spec.ty,
                value: raw.clone(),
            })?;
            values.insert(k, v);
        }
        Ok(Value::Object(values))
    }
}

/// Read access to a run's parameters for tasks.
#[derive(Clone, Debug, Default)]
pub struct Params(pub serde_json::Map<String, Value>);

impl Params {
    pub fn from_value(v: &Value) -> Self {
        Self(v.as_object().cloned().unwrap_or_default())
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.0.get(name).and_then(Value::as_bool)
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(Value::as_i64)
    }
    pub fn float(&self, name: &str) -> Option<f64> {
        self.0.get(name).and_then(Value::as_f64)
    }
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cli_overrides_are_typed() {
        let mut s = ParamSchema {
            job: "train".into(),
            ..Default::default()
        };
        s.specs.insert(
            "force_retrain".into(),
            ParamSpec::new("force_retrain", ParamType::Bool, json!(false), ""),
        );
        s.specs.insert(
            "days".into(),
            ParamSpec::new("days", ParamType::Int, json!(8), ""),
        );
        assert_eq!(
            s.resolve_cli(&["force_retrain=true".into()]).unwrap(),
            json!({"force_retrain": true, "days": 8})
        );
        let e = s.resolve_cli(&["force_retrain=maybe".into()]).unwrap_err();
        assert!(e.to_string().contains("must be bool, got `maybe`"), "{e}");
        let e = s.resolve_cli(&["days=1.5".into()]).unwrap_err();
        assert!(matches!(e, ParamError::WrongType { .. }));
        let e = s.resolve_cli(&["nope=1".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("declared parameters: days: int, force_retrain: bool"),
            "{e}"
        );
        assert!(matches!(
            s.resolve_cli(&["days".into()]),
            Err(ParamError::Syntax(_))
        ));
    }
}
