//! The value of one reading.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The value a sensor produced.
///
/// Floats must be finite (JSON has no NaN or infinity); text is short (at
/// most [`crate::MAX_TEXT_LEN`] bytes). Both rules are checked by
/// [`crate::Envelope::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A measurement such as a temperature.
    Float(f64),
    /// A count or other whole number.
    Int(i64),
    /// A switch or contact state.
    Bool(bool),
    /// A short state string such as `"ON"` or `"charging"`.
    Text(String),
}

impl Value {
    /// The value as a float, when it is numeric (used for deadbands).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(_) | Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "{v:?}"),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
