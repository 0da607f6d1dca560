//! [`Fleet`]: the operator, the fleet's account and its scoped signing key
//! for devices, made fresh, kept in a directory, and used to issue `.creds`
//! files.
//!
//! The directory `init` writes (`tributary-uplink creds init <dir>`):
//!
//! ```text
//! <dir>/operator.jwt          public: the operator the hub trusts
//! <dir>/account.jwt           public: the fleet account, with the device template
//! <dir>/system.jwt            public: the system account (the servers' own, for JetStream)
//! <dir>/resolver.conf         public: `include` it in the hub's nats-server config
//! <dir>/uplink.creds    0600  secret: a central user (the uplink, `fleet`), all permissions
//! <dir>/keys/         0700
//!     operator.nk       0600  secret: signs accounts; keep it offline once init is done
//!     account.nk        0600  secret: signs central users and re-issues account.jwt
//!     device-signing.nk 0600  secret: the scoped key that issues device users
//!     system.nk         0600  secret: the system account
//! ```
//!
//! A device user is issued by the scoped signing key with the device id as
//! its name and no permissions of its own: the server applies the key's
//! template, `cross/hub/device-user.conf` with `{{name()}}` for the device
//! (see [`crate::template`]). Issuing a device needs only the directory,
//! never the hub: the account JWT does not list its users. Seeds are only
//! ever written to files created with mode 0600; `Debug` never shows them.

use crate::creds::Creds;
use crate::template::DevicePermissions;
use crate::{CredsError, jwt};
use nkeys::KeyPair;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The name of the fleet's account in its JWT.
pub const ACCOUNT_NAME: &str = "TRIBUTARY";

/// The name of the system account (which nats-server needs for JetStream in operator mode).
pub const SYSTEM_NAME: &str = "SYS";

/// The central user `init` writes, for the uplink and the central command.
pub const UPLINK_USER: &str = "uplink";

/// Files of a fleet directory (see the module docs).
pub mod files {
    /// The operator JWT.
    pub const OPERATOR_JWT: &str = "operator.jwt";
    /// The account JWT.
    pub const ACCOUNT_JWT: &str = "account.jwt";
    /// The system account's JWT.
    pub const SYSTEM_JWT: &str = "system.jwt";
    /// The system account's seed.
    pub const SYSTEM_SEED: &str = "keys/system.nk";
    /// The hub's configuration snippet.
    pub const RESOLVER_CONF: &str = "resolver.conf";
    /// The central user's credentials.
    pub const UPLINK_CREDS: &str = "uplink.creds";
    /// The directory of the seeds.
    pub const KEYS: &str = "keys";
    /// The operator's seed.
    pub const OPERATOR_SEED: &str = "keys/operator.nk";
    /// The account's seed.
    pub const ACCOUNT_SEED: &str = "keys/account.nk";
    /// The scoped signing key's seed.
    pub const SIGNING_SEED: &str = "keys/device-signing.nk";
}

/// An operator, the fleet's account and the account's scoped signing key
/// for devices, with the operator and account JWTs.
#[derive(Clone, PartialEq, Eq)]
pub struct Fleet {
    operator_seed: String,
    account_seed: String,
    signing_seed: String,
    system_seed: String,
    operator_jwt: String,
    account_jwt: String,
    system_jwt: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("account", &self.account_public())
            .field("signing_key", &self.signing_public())
            .field("seeds", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Fresh keys for an operator called `operator_name`, the account and
    /// the device signing key, with the device template of the shipped
    /// `cross/hub/device-user.conf`.
    pub fn generate(operator_name: &str) -> Result<Self, CredsError> {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let system = KeyPair::new_account();
        let operator_jwt = jwt::sign(
            &operator,
            &operator.public_key(),
            operator_name,
            jwt::operator_claims(&system.public_key()),
        );
        let system_jwt = jwt::sign(
            &operator,
            &system.public_key(),
            SYSTEM_NAME,
            jwt::system_claims(),
        );
        let mut fleet = Fleet {
            operator_seed: seed(&operator),
            account_seed: seed(&account),
            signing_seed: seed(&signing),
            system_seed: seed(&system),
            operator_jwt,
            account_jwt: String::new(),
            system_jwt,
        };
        fleet.reissue_account()?;
        Ok(fleet)
    }

    /// Signs the account JWT again with the template of the device-user.conf
    /// compiled into this program (after an upgrade that changed it).
    pub fn reissue_account(&mut self) -> Result<(), CredsError> {
        let template = DevicePermissions::shipped()?.as_template();
        let signing = self.signing_public();
        let claims = jwt::account_claims(Some((
            &signing,
            jwt::scope_template(&template.publish, &template.subscribe),
        )));
        self.account_jwt = jwt::sign(
            &key(&self.operator_seed),
            &self.account_public(),
            ACCOUNT_NAME,
            claims,
        );
        Ok(())
    }

    /// The account's public key (`A…`).
    pub fn account_public(&self) -> String {
        key(&self.account_seed).public_key()
    }

    /// The scoped signing key's public key (`A…`).
    pub fn signing_public(&self) -> String {
        key(&self.signing_seed).public_key()
    }

    /// The system account's public key (`A…`).
    pub fn system_public(&self) -> String {
        key(&self.system_seed).public_key()
    }

    /// The operator JWT.
    pub fn operator_jwt(&self) -> &str {
        &self.operator_jwt
    }

    /// The account JWT.
    pub fn account_jwt(&self) -> &str {
        &self.account_jwt
    }

    /// The hub's configuration lines: trust the operator, know the account
    /// (a memory resolver preloaded with it: users are not listed anywhere,
    /// so a new device needs no change on the hub).
    pub fn resolver_config(&self) -> String {
        format!(
            "# Operator mode for the Tributary fleet, written by `tributary-uplink creds init`:\n\
             # `include` this file in the hub's nats-server configuration (the same on every\n\
             # node). It holds only public JWTs.\n\
             operator: {:?}\n\
             system_account: {:?}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {:?}: {:?}\n  {:?}: {:?}\n}}\n",
            self.operator_jwt,
            self.system_public(),
            self.account_public(),
            self.account_jwt,
            self.system_public(),
            self.system_jwt
        )
    }

    /// The `.creds` of device `device`: a user named after it, issued by
    /// the scoped signing key, so that the server grants it the device
    /// template with `{{name()}}` = `device` and nothing else.
    pub fn device_creds(&self, device: &str) -> Result<Creds, CredsError> {
        tributary_wire::subject::validate_token("device", device)?;
        if device.contains("{{") || device.contains("}}") {
            return Err(CredsError::TemplateInName {
                device: device.to_owned(),
            });
        }
        let user = KeyPair::new_user();
        let account = self.account_public();
        let jwt = jwt::sign(
            &key(&self.signing_seed),
            &user.public_key(),
            device,
            jwt::user_claims(Some(&account)),
        );
        Ok(Creds::new(device, jwt, seed(&user)))
    }

    /// The `.creds` of a central user `name` (the uplink, the central
    /// command): issued by the account itself, so with every permission.
    pub fn central_creds(&self, name: &str) -> Creds {
        let user = KeyPair::new_user();
        let jwt = jwt::sign(
            &key(&self.account_seed),
            &user.public_key(),
            name,
            jwt::user_claims(None),
        );
        Creds::new(name, jwt, seed(&user))
    }

    /// Writes a new fleet directory at `dir` (see the module docs): refuses
    /// when it already holds keys. Returns the files written.
    pub fn init_dir(&self, dir: &Path) -> Result<Vec<PathBuf>, CredsError> {
        let keys = dir.join(files::KEYS);
        if keys.exists() {
            return Err(CredsError::Exists { path: keys });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&keys)
            .map_err(|e| CredsError::io(&keys, e))?;
        let mut written = Vec::new();
        for (file, seed) in [
            (files::OPERATOR_SEED, &self.operator_seed),
            (files::ACCOUNT_SEED, &self.account_seed),
            (files::SIGNING_SEED, &self.signing_seed),
            (files::SYSTEM_SEED, &self.system_seed),
        ] {
            written.push(write_secret(&dir.join(file), &format!("{seed}\n"))?);
        }
        written.extend(self.write_public(dir)?);
        let uplink = self.central_creds(UPLINK_USER);
        written.push(write_secret(
            &dir.join(files::UPLINK_CREDS),
            &uplink.text(),
        )?);
        Ok(written)
    }

    /// (Re)writes the public files of `dir`: the operator and account JWTs
    /// and the resolver snippet.
    pub fn write_public(&self, dir: &Path) -> Result<Vec<PathBuf>, CredsError> {
        let mut written = Vec::new();
        for (file, text) in [
            (files::OPERATOR_JWT, format!("{}\n", self.operator_jwt)),
            (files::ACCOUNT_JWT, format!("{}\n", self.account_jwt)),
            (files::SYSTEM_JWT, format!("{}\n", self.system_jwt)),
            (files::RESOLVER_CONF, self.resolver_config()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).map_err(|e| CredsError::io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }

    /// The fleet kept in `dir` by [`init_dir`](Self::init_dir): its seeds
    /// and JWTs, each checked (the JWTs' signatures and that they belong to
    /// these keys).
    pub fn load_dir(dir: &Path) -> Result<Self, CredsError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| CredsError::io(&path, e))
        };
        let seed_of = |file: &str, kind: &'static str| -> Result<String, CredsError> {
            let text = read(file)?;
            KeyPair::from_seed(&text).map_err(|_| CredsError::BadSeed {
                path: dir.join(file),
                kind,
            })?;
            Ok(text)
        };
        let fleet = Fleet {
            operator_seed: seed_of(files::OPERATOR_SEED, "operator")?,
            account_seed: seed_of(files::ACCOUNT_SEED, "account")?,
            signing_seed: seed_of(files::SIGNING_SEED, "account signing")?,
            system_seed: seed_of(files::SYSTEM_SEED, "system account")?,
            operator_jwt: read(files::OPERATOR_JWT)?,
            account_jwt: read(files::ACCOUNT_JWT)?,
            system_jwt: read(files::SYSTEM_JWT)?,
        };
        let account = jwt::verified_claims(&fleet.account_jwt)?;
        let operator_public = key(&fleet.operator_seed).public_key();
        if account["iss"] != operator_public.as_str()
            || account["sub"] != fleet.account_public().as_str()
        {
            return Err(CredsError::Mismatch {
                path: dir.join(files::ACCOUNT_JWT),
            });
        }
        let operator = jwt::verified_claims(&fleet.operator_jwt)?;
        if operator["sub"] != operator_public.as_str() {
            return Err(CredsError::Mismatch {
                path: dir.join(files::OPERATOR_JWT),
            });
        }
        Ok(fleet)
    }
}

fn seed(key: &KeyPair) -> String {
    key.seed().expect("a new key pair has a seed")
}

fn key(seed: &str) -> KeyPair {
    KeyPair::from_seed(seed).expect("a Fleet holds valid seeds")
}

/// Creates `path` (never overwriting it) with mode 0600 and `text`.
pub(crate) fn write_secret(path: &Path, text: &str) -> Result<PathBuf, CredsError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CredsError::Exists {
                path: path.to_owned(),
            },
            _ => CredsError::io(path, e),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CredsError::io(path, e))?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_account_carries_the_device_template_of_its_scoped_signing_key() {
        let fleet = Fleet::generate("test").unwrap();
        let claims = jwt::verified_claims(fleet.account_jwt()).unwrap();
        let key = &claims["nats"]["signing_keys"][0];
        assert_eq!(key["kind"], "user_scope");
        assert_eq!(key["key"], fleet.signing_public());
        let allow = key["template"]["pub"]["allow"].as_array().unwrap();
        assert!(
            allow.iter().any(|s| s == "tributary.{{name()}}.>"),
            "{allow:?}"
        );
        assert_eq!(
            allow.len(),
            DevicePermissions::shipped().unwrap().publish.len()
        );
        assert_eq!(claims["nats"]["limits"]["disk_storage"], -1, "JetStream on");
    }

    #[test]
    fn a_device_user_is_named_after_the_device_and_issued_by_the_signing_key() {
        let fleet = Fleet::generate("test").unwrap();
        let creds = fleet.device_creds("pi-kitchen").unwrap();
        let claims = jwt::verified_claims(creds.jwt()).unwrap();
        assert_eq!(claims["name"], "pi-kitchen");
        assert_eq!(claims["iss"], fleet.signing_public());
        assert_eq!(claims["nats"]["issuer_account"], fleet.account_public());
        for own in ["pub", "sub", "subs", "data", "payload"] {
            assert!(
                claims["nats"].get(own).is_none(),
                "scoped: no {own} of its own (the server refuses a scoped user that has them)"
            );
        }
        assert!(matches!(
            fleet.device_creds("pi.kitchen"),
            Err(CredsError::Device(_))
        ));
        assert!(fleet.device_creds("{{name()}}").is_err());
        let central = fleet.central_creds("uplink");
        let claims = jwt::verified_claims(central.jwt()).unwrap();
        assert_eq!(claims["iss"], fleet.account_public());
    }

    #[test]
    fn a_fleet_directory_keeps_its_secrets_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::generate("test").unwrap();
        let written = fleet.init_dir(dir.path()).unwrap();
        assert_eq!(written.len(), 9);
        for file in [
            files::OPERATOR_SEED,
            files::SIGNING_SEED,
            files::UPLINK_CREDS,
        ] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let resolver = std::fs::read_to_string(dir.path().join(files::RESOLVER_CONF)).unwrap();
        assert!(resolver.contains(fleet.account_jwt()));
        for secret in [
            &fleet.operator_seed,
            &fleet.account_seed,
            &fleet.signing_seed,
        ] {
            assert!(!resolver.contains(secret.as_str()));
            assert!(!format!("{fleet:?}").contains(secret.as_str()));
        }
        assert_eq!(Fleet::load_dir(dir.path()).unwrap(), fleet);
        assert!(matches!(
            fleet.init_dir(dir.path()),
            Err(CredsError::Exists { .. })
        ));

        // An account JWT of another operator is refused.
        let other = Fleet::generate("other").unwrap();
        other.write_public(dir.path()).unwrap();
        assert!(matches!(
            Fleet::load_dir(dir.path()),
            Err(CredsError::Mismatch { .. })
        ));
    }
}
