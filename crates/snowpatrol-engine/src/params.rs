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
    /// The values a task can act on, when it is a closed set (`model` in {default, baseline}): anything else
    /// would be accepted by the type and fail every task of the run.
    pub one_of: Option<Vec<Value>>,
    /// Inclusive numeric bounds (int and float params): `backfill_days = -5` is refused, not read as 1.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl ParamSpec {
    pub fn new(name: &str, ty: ParamType, default: Value, description: &str) -> Self {
        Self {
            name: name.into(),
            ty,
            default,
            description: description.into(),
            one_of: None,
            min: None,
            max: None,
        }
    }

    /// Only these values are accepted.
    pub fn one_of<V: Into<Value>>(mut self, values: impl IntoIterator<Item = V>) -> Self {
        self.one_of = Some(values.into_iter().map(Into::into).collect());
        self
    }

    /// Values below `min` are refused.
    pub fn min(mut self, min: impl Into<f64>) -> Self {
        self.min = Some(min.into());
        self
    }

    /// Values above `max` are refused.
    pub fn max(mut self, max: impl Into<f64>) -> Self {
        self.max = Some(max.into());
        self
    }

    /// The domain for people: `one of: default, baseline`, `>= 1`, `between 1 and 10`; None when any value of
    /// the type is accepted.
    pub fn domain_text(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(values) = &self.one_of {
            parts.push(format!("one of: {}", list_values(values)));
        }
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => parts.push(format!("between {lo} and {hi}")),
            (Some(lo), None) => parts.push(format!(">= {lo}")),
            (None, Some(hi)) => parts.push(format!("<= {hi}")),
            (None, None) => {}
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Checks a value of the declared type against the domain.
    pub fn check(&self, job: &str, value: &Value) -> Result<(), ParamError> {
        if let Some(values) = &self.one_of
            && !values.iter().any(|v| same_value(v, value))
        {
            return Err(ParamError::NotOneOf {
                job: job.into(),
                name: self.name.clone(),
                allowed: list_values(values),
                value: show_value(value),
            });
        }
        if let Some(x) = value.as_f64() {
            let below = self.min.is_some_and(|lo| x < lo);
            let above = self.max.is_some_and(|hi| x > hi);
            if below || above {
                return Err(ParamError::OutOfRange {
                    job: job.into(),
                    name: self.name.clone(),
                    range: match (self.min, self.max) {
                        (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                        (Some(lo), None) => format!(">= {lo}"),
                        (None, Some(hi)) => format!("<= {hi}"),
                        (None, None) => String::new(),
                    },
                    value: show_value(value),
                });
            }
        }
        Ok(())
    }

    /// Problems of the declaration itself: bounds on a non-numeric type, allowed values of the wrong type,
    /// `min > max`, and a default outside the domain. Messages only; the caller knows the key path.
    pub fn declaration_problems(&self, job: &str) -> Vec<String> {
        let mut out = Vec::new();
        let numeric = matches!(self.ty, ParamType::Int | ParamType::Float);
        if !numeric && (self.min.is_some() || self.max.is_some()) {
            out.push(format!(
                "min and max apply to int and float parameters, not {}",
                self.ty
            ));
        }
        if let (Some(lo), Some(hi)) = (self.min, self.max)
            && lo > hi
        {
            out.push(format!("min ({lo}) is greater than max ({hi})"));
        }
        for bound in [self.min, self.max].into_iter().flatten() {
            if !bound.is_finite() {
                out.push(format!("bounds must be finite numbers, got {bound}"));
            }
        }
        if let Some(values) = &self.one_of {
            if values.is_empty() {
                out.push("one_of allows no value (a one_of in the TOML must share values with the job's own)".into());
            }
            for v in values {
                if coerce_value(self.ty, v).is_none() {
                    out.push(format!("one_of value {v} is not a {}", self.ty));
                }
            }
        }
        if out.is_empty()
            && let Err(e) = self.check(job, &self.default)
        {
            out.push(format!("the default is outside the domain: {e}"));
        }
        out
    }

    /// Adds the constraints of `other` (the operator's TOML) to these (the code's): both must hold, so the
    /// TOML can narrow what a task supports but never widen it.
    pub fn narrow(&mut self, one_of: Option<Vec<Value>>, min: Option<f64>, max: Option<f64>) {
        self.one_of = match (self.one_of.take(), one_of) {
            (Some(a), Some(b)) => Some(
                a.into_iter()
                    .filter(|v| b.iter().any(|w| same_value(v, w)))
                    .collect(),
            ),
            (a, b) => a.or(b),
        };
        self.min = match (self.min, min) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Equal as parameter values: `2` and `2.0` are the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A value as a person types it on the command line (strings without quotes).
fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list_values(values: &[Value]) -> String {
    values.iter().map(show_value).collect::<Vec<_>>().join(", ")
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
    #[error("parameter `{name}` of job `{job}` must be one of: {allowed}; got `{value}`")]
    NotOneOf {
        job: String,
        name: String,
        allowed: String,
        value: String,
    },
    #[error("parameter `{name}` of job `{job}` must be {range}; got `{value}`")]
    OutOfRange {
        job: String,
        name: String,
        range: String,
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
                .map(|s| match s.domain_text() {
                    Some(d) => format!("{}: {} ({d})", s.name, s.ty),
                    None => format!("{}: {}", s.name, s.ty),
                })
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
            spec.check(&self.job, &v)?;
            values.insert(k, v);
        }
        Ok(Value::Object(values))
    }

    /// Checks stored or computed parameters (a run's, before its tasks read them) against the declarations.
    pub fn check(&self, params: &Value) -> Result<(), ParamError> {
        for (name, spec) in &self.specs {
            if let Some(v) = params.get(name) {
                spec.check(&self.job, v)?;
            }
        }
        Ok(())
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

    fn train_schema() -> ParamSchema {
        let mut s = ParamSchema {
            job: "train".into(),
            ..Default::default()
        };
        for spec in [
            ParamSpec::new("model", ParamType::String, json!("default"), "")
                .one_of(["default", "baseline"]),
            ParamSpec::new("backfill_days", ParamType::Int, json!(365), "").min(1),
            ParamSpec::new("ratio", ParamType::Float, json!(0.5), "")
                .min(0)
                .max(1),
        ] {
            s.specs.insert(spec.name.clone(), spec);
        }
        s
    }

    #[test]
    fn values_outside_the_domain_are_refused_naming_it() {
        let s = train_schema();
        let e = s.resolve_cli(&["model=quantum".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter `model` of job `train` must be one of: default, baseline; got `quantum`"
        );
        assert_eq!(
            s.resolve_cli(&["model=baseline".into()]).unwrap()["model"],
            json!("baseline")
        );
        let e = s.resolve_cli(&["backfill_days=-5".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter `backfill_days` of job `train` must be >= 1; got `-5`"
        );
        assert!(s.resolve_cli(&["backfill_days=0".into()]).is_err());
        assert!(s.resolve_cli(&["backfill_days=1".into()]).is_ok());
        let e = s.resolve_cli(&["ratio=1.5".into()]).unwrap_err();
        assert!(
            e.to_string().contains("must be between 0 and 1; got `1.5`"),
            "{e}"
        );
        assert!(s.resolve_cli(&["ratio=1".into()]).is_ok());
        // Stored parameters are checked the same way.
        assert!(s.check(&json!({"model": "default", "ratio": 0.0})).is_ok());
        assert!(matches!(
            s.check(&json!({"model": "quantum"})),
            Err(ParamError::NotOneOf { .. })
        ));
        // The domain is shown with the declared parameters.
        let e = s.resolve_cli(&["nope=1".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("model: string (one of: default, baseline)")
                && e.to_string().contains("backfill_days: int (>= 1)"),
            "{e}"
        );
    }

    #[test]
    fn declarations_are_checked_and_narrowed() {
        let ok = ParamSpec::new("n", ParamType::Int, json!(3), "")
            .min(1)
            .max(10);
        assert_eq!(ok.declaration_problems("j"), Vec::<String>::new());
        assert_eq!(ok.domain_text().as_deref(), Some("between 1 and 10"));
        let bad_default = ParamSpec::new("n", ParamType::Int, json!(0), "").min(1);
        let p = bad_default.declaration_problems("j");
        assert!(
            p.len() == 1 && p[0].contains("must be >= 1; got `0`"),
            "{p:?}"
        );
        let p = ParamSpec::new("s", ParamType::String, json!("a"), "")
            .min(1)
            .declaration_problems("j");
        assert!(p[0].contains("not string"), "{p:?}");
        let p = ParamSpec::new("n", ParamType::Int, json!(3), "")
            .min(5)
            .max(1)
            .declaration_problems("j");
        assert!(p[0].contains("greater than max"), "{p:?}");
        let p = ParamSpec::new("m", ParamType::String, json!("a"), "")
            .one_of([json!("a"), json!(1)])
            .declaration_problems("j");
        assert!(p[0].contains("not a string"), "{p:?}");
        // The TOML narrows the code's domain, never widens it.
        let mut m = ParamSpec::new("m", ParamType::String, json!("default"), "")
            .one_of(["default", "baseline"]);
        m.narrow(Some(vec![json!("default"), json!("quantum")]), None, None);
        assert_eq!(m.one_of, Some(vec![json!("default")]));
        let mut n = ParamSpec::new("n", ParamType::Int, json!(3), "")
            .min(1)
            .max(10);
        n.narrow(None, Some(-5.0), Some(5.0));
        assert_eq!((n.min, n.max), (Some(1.0), Some(5.0)));
    }
}
