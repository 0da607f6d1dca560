//! NATS JWTs: `base64url(header).base64url(claims).base64url(signature)`,
//! the signature being the issuer's ed25519 nkey signature of the first two
//! parts, in the layout `nsc` writes and nats-server reads (claims version 2).
//!
//! The operator signs itself and the account; the account's own key signs
//! central users (no limits of their own); the account's scoped signing key
//! signs device users, whose permissions the server then takes from the
//! key's template in the account JWT, never from the user JWT.

use crate::CredsError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// A JWT issued by `issuer` for `subject` named `name`, with the `nats`
/// claims given.
pub fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
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

/// The claims of `jwt` once its signature is checked against its issuer
/// (`iss`).
pub fn verified_claims(jwt: &str) -> Result<Value, CredsError> {
    let bad = |reason: &str| CredsError::BadJwt {
        reason: reason.to_owned(),
    };
    let mut parts = jwt.trim().split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not three dot-separated parts"));
    };
    let decoded = URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| bad("the claims are not base64url"))?;
    let claims_json: Value =
        serde_json::from_slice(&decoded).map_err(|_| bad("the claims are not JSON"))?;
    let issuer = claims_json["iss"]
        .as_str()
        .ok_or_else(|| bad("no issuer"))?;
    let key = KeyPair::from_public_key(issuer).map_err(|_| bad("the issuer is not an nkey"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| bad("the signature is not base64url"))?;
    key.verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| bad("the signature does not match the issuer"))?;
    Ok(claims_json)
}

/// The claims of the operator JWT (self-signed), naming its system account.
pub fn operator_claims(system_account: &str) -> Value {
    json!({"type": "operator", "system_account": system_account, "version": 2})
}

/// The claims of the fleet's account: no limits but JetStream enabled
/// (unlimited storage, streams and consumers; the hub's `jetstream` block
/// bounds the server), and `signing_key` as a scoped key whose template is
/// `template` (user permission limits: pub, sub, subs, data, payload).
pub fn account_claims(signing_key: Option<(&str, Value)>) -> Value {
    let signing_keys = match signing_key {
        Some((key, template)) => json!([{
            "kind": "user_scope",
            "key": key,
            "role": "device",
            "template": template,
            "description": "tributary devices: cross/hub/device-user.conf with {{name()}} as the device"
        }]),
        None => json!([]),
    };
    json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        },
        "signing_keys": signing_keys,
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2
    })
}

/// The claims of the system account: the servers' own traffic, no
/// JetStream, no signing keys.
pub fn system_claims() -> Value {
    json!({
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1
        },
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2
    })
}

/// The claims of a user: a central user signed by the account key has no
/// limits and every permission; a device user signed by a scoped key
/// (`issuer_account` given) must carry no permissions nor limits at all
/// (the server refuses it otherwise) and gets the key's template.
pub fn user_claims(issuer_account: Option<&str>) -> Value {
    match issuer_account {
        Some(account) => json!({
            "issuer_account": account, "type": "user", "version": 2
        }),
        None => json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    }
}

/// The scoped signing key's template: `publish` and `subscribe` allow lists
/// and no other limits.
pub fn scope_template(publish: &[String], subscribe: &[String]) -> Value {
    json!({
        "pub": {"allow": publish},
        "sub": {"allow": subscribe},
        "subs": -1, "data": -1, "payload": -1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_jwt_verifies_and_a_tampered_one_does_not() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let jwt = sign(&account, &user.public_key(), "pi", user_claims(None));
        let claims = verified_claims(&jwt).expect("verifies");
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["sub"], user.public_key());
        assert_eq!(claims["nats"]["type"], "user");

        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut forged = claims.clone();
        forged["name"] = json!("other");
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(matches!(
            verified_claims(&parts.join(".")),
            Err(CredsError::BadJwt { .. })
        ));
        assert!(verified_claims("a.b").is_err());
    }
}
