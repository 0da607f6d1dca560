//! The subject scheme `<prefix>.<device>.<sensor>` and id validation.
//!
//! Device and sensor ids become NATS subject tokens, so they must not be
//! empty and must not contain `.`, `*`, `>` or whitespace. The prefix is one
//! or more such tokens joined by `.`.

/// An id that cannot be used where it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{what} id is empty; it must be a NATS subject token")]
    Empty {
        /// What kind of id (device, sensor, subject prefix).
        what: &'static str,
    },
    /// The id holds a character a NATS subject token cannot hold.
    #[error(
        "{what} id {id:?} contains {bad:?}; ids must be NATS subject tokens (no '.', '*', '>' or whitespace)"
    )]
    BadChar {
        /// What kind of id.
        what: &'static str,
        /// The id as given.
        id: String,
        /// The first bad character.
        bad: char,
    },
    /// The id is longer than the contract allows.
    #[error("{what} id {id:?} is {len} bytes long (at most {MAX_ID_LEN})")]
    TooLong {
        /// What kind of id.
        what: &'static str,
        /// The id as given.
        id: String,
        /// Its length.
        len: usize,
    },
    /// A sensor id starts with `$`, which marks the subjects the contract
    /// keeps for itself (`<prefix>.<device>.$outcome`).
    #[error("sensor id {id:?} starts with '$', which is kept for Tributary's own subjects")]
    Reserved {
        /// The id as given.
        id: String,
    },
    /// A reading id string is not `device:epoch:seq`.
    #[error("{0:?} is not a reading id (device:epoch:seq)")]
    BadReadingId(String),
}

/// The longest device or sensor id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Checks that `id` can be a NATS subject token. `what` names it in the error.
pub fn validate_token(what: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { what });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            id: id.to_owned(),
            len: id.len(),
        });
    }
    if let Some(bad) = id
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(IdError::BadChar {
            what,
            id: id.to_owned(),
            bad,
        });
    }
    Ok(())
}

/// Checks a sensor id: a subject token that does not start with `$` (kept
/// for subjects such as a device's command outcomes).
pub fn validate_sensor(id: &str) -> Result<(), IdError> {
    validate_token("sensor", id)?;
    if id.starts_with('$') {
        return Err(IdError::Reserved { id: id.to_owned() });
    }
    Ok(())
}

/// Checks a subject prefix: one or more tokens joined by `.`.
pub fn validate_prefix(prefix: &str) -> Result<(), IdError> {
    if prefix.is_empty() {
        return Err(IdError::Empty {
            what: "subject prefix",
        });
    }
    prefix
        .split('.')
        .try_for_each(|t| validate_token("subject prefix", t))
}

/// The subject readings of `sensor` on `device` are published to.
pub fn subject(prefix: &str, device: &str, sensor: &str) -> String {
    format!("{prefix}.{device}.{sensor}")
}

/// Splits a subject published under `prefix` into (device, sensor).
pub fn parse<'a>(prefix: &str, subject: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (device, sensor) = rest.split_once('.')?;
    (!device.is_empty() && !sensor.is_empty() && !sensor.contains('.')).then_some((device, sensor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_id_starting_with_a_dollar_is_refused_as_reserved() {
        assert!(matches!(
            validate_sensor("$outcome"),
            Err(IdError::Reserved { .. })
        ));
        assert!(validate_sensor("temp$1").is_ok());
    }

    #[test]
    fn ordinary_ids_are_valid_tokens() {
        for id in [
            "pi-kitchen",
            "cpu_temp",
            "28-00000a1b2c3d",
            "Zigbee:0x00158d",
        ] {
            validate_token("device", id).unwrap();
        }
    }

    #[test]
    fn an_id_with_a_dot_wildcard_or_space_is_refused_and_named() {
        for (id, bad) in [
            ("a.b", '.'),
            ("a*", '*'),
            ("a>", '>'),
            ("a b", ' '),
            ("a\tb", '\t'),
        ] {
            let err = validate_token("sensor", id).unwrap_err();
            assert_eq!(
                err,
                IdError::BadChar {
                    what: "sensor",
                    id: id.into(),
                    bad
                }
            );
            assert!(err.to_string().contains("sensor id"), "{err}");
        }
        assert_eq!(
            validate_token("device", ""),
            Err(IdError::Empty { what: "device" })
        );
    }

    #[test]
    fn a_prefix_may_have_several_tokens_but_no_empty_one() {
        validate_prefix("tributary").unwrap();
        validate_prefix("acme.site1.tributary").unwrap();
        assert!(validate_prefix("acme..x").is_err());
        assert!(validate_prefix("acme.").is_err());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("acme.>").is_err());
    }

    #[test]
    fn subjects_are_built_and_parsed_back() {
        let s = subject("acme.tributary", "pi-1", "temp");
        assert_eq!(s, "acme.tributary.pi-1.temp");
        assert_eq!(parse("acme.tributary", &s), Some(("pi-1", "temp")));
        assert_eq!(parse("acme.tributary", "acme.tributary.pi-1"), None);
        assert_eq!(parse("other", &s), None);
        assert_eq!(parse("acme.tributary", "acme.tributary.a.b.c"), None);
    }
}
