//! Decentralized (JWT) authentication for test servers: an operator, one account and one user,
//! with keys made fresh for each test, so a server can require a `.creds` file the way a
//! production NATS deployment in operator mode does.
//!
//! The keys and JWTs come from `tributary_creds` (what `tributary-uplink creds` writes): the
//! operator signs itself and the account, the account signs the user (a central user, with
//! every permission). The server trusts the operator JWT and finds the account JWT in its
//! `resolver_preload`; the client presents the user JWT and signs the server's nonce with the
//! user seed, both taken from the `.creds` file. [`JwtAuth::fleet`] issues device users too.

use tributary_creds::{Creds, Fleet};

/// An operator, an account and a user of that account, with their JWTs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuth {
    fleet: Fleet,
    account_public: String,
    user: Creds,
}

impl JwtAuth {
    /// Fresh keys and JWTs.
    pub fn generate() -> Self {
        let fleet = Fleet::generate("tributary-test-operator").expect("the shipped template");
        let user = fleet.central_creds("pi");
        JwtAuth {
            account_public: fleet.account_public(),
            fleet,
            user,
        }
    }

    /// The operator, account and device signing key behind this user.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The account's public key (`A…`): a leaf binds its link to the hub to it.
    pub fn account(&self) -> &str {
        &self.account_public
    }

    /// The user's seed (`SU…`), which must never appear in logs.
    pub fn user_seed(&self) -> &str {
        self.user.seed()
    }

    /// The server configuration lines: trust the operator, know the account.
    pub fn server_config(&self) -> String {
        self.fleet.resolver_config()
    }

    /// The text of the user's `.creds` file, in the layout `nsc` writes.
    pub fn creds(&self) -> String {
        self.user.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_jwt_is_signed_by_its_issuer() {
        let auth = JwtAuth::generate();
        let user_jwt = auth.creds().lines().nth(1).expect("jwt line").to_owned();
        let claims = tributary_creds::jwt::verified_claims(&user_jwt).expect("signed");
        assert_eq!(claims["iss"], auth.account(), "the account signed the user");
        assert!(auth.creds().contains(auth.user_seed()));
        assert!(auth.server_config().contains(auth.account()));
    }
}
