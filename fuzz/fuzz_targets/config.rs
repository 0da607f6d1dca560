//! Fuzz target: the configuration parser (tributary-config), for the agent's
//! and the uplink's TOML (the first byte chooses). Properties: it never
//! panics, whatever the text; an error renders (file, line, column, what was
//! expected) without panicking and names a position inside the text; a
//! configuration that parses parses again from the same text identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tributary_config::{AgentConfig, UplinkConfig, parse};

fn check<T: serde::de::DeserializeOwned + tributary_config::Validate + std::fmt::Debug>(
    text: &str,
) {
    match parse::<T>(text, Path::new("fuzz.toml")) {
        Ok(c) => {
            let again = parse::<T>(text, Path::new("fuzz.toml")).expect("parses twice");
            assert_eq!(format!("{c:?}"), format!("{again:?}"));
        }
        Err(e) => {
            if let tributary_config::ConfigError::Invalid {
                location: Some(l), ..
            } = &e
            {
                assert!(
                    l.line >= 1 && l.line <= text.matches('\n').count() + 1,
                    "{l:?}"
                );
                assert!(l.column >= 1);
            }
            let shown = format!("{e}");
            let _ = format!("{e:?}");
            assert!(!shown.is_empty());
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let _ = s.to_string();
                source = s.source();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if which % 2 == 0 {
        check::<AgentConfig>(text);
    } else {
        check::<UplinkConfig>(text);
    }
});
