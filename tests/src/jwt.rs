//! Decentralized (JWT) authentication for test servers: an operator, one account and one user,
//! with keys made fresh for each test, so a server can require a `.creds` file the way a
//! production NATS deployment managed with `nsc` does.
//!
//! A NATS JWT is `base64url(header).base64url(claims).base64url(signature)` where the
//! signature is the issuer's ed25519 nkey signature of the first two parts. The operator signs
//! itself and the account; the account signs the user. The server trusts the operator JWT and
//! finds the account JWT in its `resolver_preload`; the client presents the user JWT and signs
//! the server's nonce with the user seed, both taken from the `.creds` file.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::json;

/// An operator, an account and a user of that account, with their JWTs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuth {
    operator_jwt: String,
    account_public: String,
    account_jwt: String,
    user_jwt: String,
    user_seed: String,
}

impl JwtAuth {
    /// Fresh keys and JWTs.
    pub fn generate() -> Self {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let operator_jwt = sign(
            &operator,
            &operator.public_key(),
            "tributary-test-operator",
            json!({"type": "operator", "version": 2}),
        );
        let account_jwt = sign(
            &operator,
            &account.public_key(),
            "tributary",
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1
                },
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account",
                "version": 2
            }),
        );
        let user_jwt = sign(
            &account,
            &user.public_key(),
            "pi",
            json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        );
        JwtAuth {
            operator_jwt,
            account_public: account.public_key(),
            account_jwt,
            user_jwt,
            user_seed: user.seed().expect("a new key pair has a seed"),
        }
    }

    /// The account's public key (`A…`): a leaf binds its link to the hub to it.
    pub fn account(&self) -> &str {
        &self.account_public
    }

    /// The user's seed (`SU…`), which must never appear in logs.
    pub fn user_seed(&self) -> &str {
        &self.user_seed
    }

    /// The server configuration lines: trust the operator, know the account.
    pub fn server_config(&self) -> String {
        format!(
            "operator: {:?}\nresolver: MEMORY\nresolver_preload: {{\n  {:?}: {:?}\n}}\n",
            self.operator_jwt, self.account_public, self.account_jwt
        )
    }

    /// The text of the user's `.creds` file, in the layout `nsc` writes.
    pub fn creds(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            self.user_jwt, self.user_seed
        )
    }
}

/// A JWT issued by `issuer` for `subject` with the `nats` claims given.
fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The JWT id only needs to be unique; the server does not recompute it.
    let jti = KeyPair::new_user().public_key()[1..53].to_owned();
    let claims = json!({
        "jti": jti, "iat": iat, "iss": issuer.public_key(), "name": name, "sub": subject,
        "nats": nats
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .expect("an nkey with a seed signs");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_jwt_is_signed_by_its_issuer() {
        let auth = JwtAuth::generate();
        let user_jwt = auth.creds().lines().nth(1).expect("jwt line").to_owned();
        let parts: Vec<&str> = user_jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64"))
                .expect("json");
        assert_eq!(claims["iss"], auth.account());
        let account = KeyPair::from_public_key(auth.account()).expect("account key");
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64");
        account
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the account signed the user");
        assert!(auth.creds().contains(auth.user_seed()));
    }
}
