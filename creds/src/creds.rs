//! [`Creds`]: a user's JWT and nkey seed, and the `.creds` file that holds
//! both in the layout `nsc` writes (what nats-server's leafnode remote
//! `credentials:` and the agent's and uplink's `credentials_file` read).

use crate::CredsError;
use std::path::{Path, PathBuf};

/// A user's JWT and seed. `Debug` shows the name, never the seed.
#[derive(Clone, PartialEq, Eq)]
pub struct Creds {
    name: String,
    jwt: String,
    seed: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("name", &self.name)
            .field("seed", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Creds {
    pub(crate) fn new(name: &str, jwt: String, seed: String) -> Self {
        Creds {
            name: name.to_owned(),
            jwt,
            seed,
        }
    }

    /// The user's name (a device's id for a device user).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user JWT (public).
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The user's seed (`SU…`): a secret, never to be logged.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The text of the `.creds` file.
    pub fn text(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            self.jwt, self.seed
        )
    }

    /// Writes the `.creds` file at `path` with mode 0600; refuses to
    /// overwrite a file.
    pub fn write(&self, path: &Path) -> Result<PathBuf, CredsError> {
        crate::fleet::write_secret(path, &self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creds_file_holds_the_jwt_then_the_seed_and_debug_shows_neither_seed() {
        let creds = Creds::new("pi", "eyJ.a.b".into(), "SUSECRET".into());
        let text = creds.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "eyJ.a.b");
        assert!(text.contains("-----BEGIN USER NKEY SEED-----\nSUSECRET\n"));
        assert!(!format!("{creds:?}").contains("SUSECRET"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pi.creds");
        creds.write(&path).unwrap();
        assert!(matches!(creds.write(&path), Err(CredsError::Exists { .. })));
    }
}
