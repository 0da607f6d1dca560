//! The device users' permissions, taken from the plain-accounts template
//! `cross/hub/device-user.conf` at compile time, so that operator mode and
//! plain-accounts mode grant a device exactly the same subjects.
//!
//! The file is a nats-server configuration fragment: one user entry whose
//! `permissions { publish { allow [...] } subscribe { allow [...] } }`
//! list subjects with `@DEVICE@` where the device id goes. In operator mode
//! the same lists become the template of the fleet account's scoped signing
//! key, with `@DEVICE@` written as `{{name()}}` (the user JWT's name, which
//! [`crate::Fleet::device_creds`] sets to the device id). The parser reads
//! only what that shape needs: comments (`#` to the end of the line) are
//! dropped, then the quoted strings of the first `allow` list after
//! `publish` and after `subscribe` are taken.

use crate::CredsError;

/// The shipped plain-accounts template, as compiled in.
pub const DEVICE_USER_CONF: &str = include_str!("../../cross/hub/device-user.conf");

/// Where the device id goes in [`DEVICE_USER_CONF`].
pub const DEVICE_PLACEHOLDER: &str = "@DEVICE@";

/// The same place in a scoped signing key's template: the user's name.
pub const NAME_TEMPLATE: &str = "{{name()}}";

/// What a device user may publish and subscribe to, with
/// [`DEVICE_PLACEHOLDER`] where its id goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePermissions {
    /// Subjects the device's leaf may publish into the hub.
    pub publish: Vec<String>,
    /// Subjects the hub may deliver to the device's leaf.
    pub subscribe: Vec<String>,
}

impl DevicePermissions {
    /// The permissions of the shipped [`DEVICE_USER_CONF`].
    pub fn shipped() -> Result<Self, CredsError> {
        Self::parse(DEVICE_USER_CONF)
    }

    /// Reads the `publish` and `subscribe` allow lists of a user entry.
    pub fn parse(conf: &str) -> Result<Self, CredsError> {
        let text: String = conf
            .lines()
            .map(|l| l.split_once('#').map_or(l, |(before, _)| before))
            .collect::<Vec<_>>()
            .join("\n");
        let publish = allow_list(&text, "publish")?;
        let subscribe = allow_list(&text, "subscribe")?;
        Ok(DevicePermissions { publish, subscribe })
    }

    /// The subjects with `@DEVICE@` replaced by `device`.
    pub fn for_device(&self, device: &str) -> Self {
        self.replaced(device)
    }

    /// The subjects with `@DEVICE@` written as `{{name()}}`, for a scoped
    /// signing key's template.
    pub fn as_template(&self) -> Self {
        self.replaced(NAME_TEMPLATE)
    }

    fn replaced(&self, with: &str) -> Self {
        let map = |list: &[String]| {
            list.iter()
                .map(|s| s.replace(DEVICE_PLACEHOLDER, with))
                .collect()
        };
        DevicePermissions {
            publish: map(&self.publish),
            subscribe: map(&self.subscribe),
        }
    }
}

/// The quoted strings of the first `allow: [ … ]` after `section`.
fn allow_list(text: &str, section: &'static str) -> Result<Vec<String>, CredsError> {
    let bad = |reason: &str| CredsError::Template {
        section,
        reason: reason.to_owned(),
    };
    let start = find_key(text, section).ok_or_else(|| bad("no such section"))?;
    let rest = &text[start..];
    let allow = find_key(rest, "allow").ok_or_else(|| bad("no allow list"))?;
    let rest = &rest[allow..];
    let open = rest.find('[').ok_or_else(|| bad("allow is not a list"))?;
    let close = rest[open..]
        .find(']')
        .ok_or_else(|| bad("the allow list is not closed"))?;
    let list = &rest[open + 1..open + close];
    let mut subjects = Vec::new();
    let mut parts = list.split('"');
    // Outside, inside, outside, … of the quotes.
    while let (Some(outside), Some(inside)) = (parts.next(), parts.next()) {
        if !outside.trim().trim_matches(',').trim().is_empty() {
            return Err(bad(&format!(
                "unquoted text {:?} in the list",
                outside.trim()
            )));
        }
        subjects.push(inside.to_owned());
    }
    if subjects.is_empty() {
        return Err(bad("the allow list is empty"));
    }
    Ok(subjects)
}

/// The byte offset just after the key `key` (a whole word followed by `:`,
/// `=` or `{`/`[` after spaces).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find(key) {
        let start = from + at;
        let end = start + key.len();
        let before = text[..start].chars().next_back();
        let word_start = before.is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let after = text[end..].trim_start().chars().next();
        if word_start && matches!(after, Some(':' | '=' | '{' | '[')) {
            return Some(end);
        }
        from = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_template_lists_the_device_s_own_subjects_and_what_jetstream_needs() {
        let p = DevicePermissions::shipped().expect("the shipped file parses");
        assert!(
            p.publish.contains(&"tributary.@DEVICE@.>".to_owned()),
            "{p:?}"
        );
        assert!(p.publish.contains(&"_INBOX.>".to_owned()));
        assert!(
            p.publish
                .iter()
                .any(|s| s.contains("CONSUMER.MSG.NEXT.TRIBUTARY_COMMANDS.cmd-@DEVICE@"))
        );
        assert!(
            p.publish
                .iter()
                .any(|s| s.contains("CONSUMER.CREATE.TRIBUTARY.rb-@DEVICE@"))
        );
        assert!(
            p.subscribe
                .contains(&"tributary-ctl.device.@DEVICE@.>".to_owned())
        );
        // Every publish subject but the replies names the device.
        for s in &p.publish {
            assert!(s == "_INBOX.>" || s.contains(DEVICE_PLACEHOLDER), "{s}");
        }
        assert!(!p.publish.iter().any(|s| s.contains('#') || s.contains(' ')));
    }

    #[test]
    fn the_template_form_names_the_user_where_the_device_goes() {
        let t = DevicePermissions::shipped().unwrap().as_template();
        assert!(t.publish.contains(&"tributary.{{name()}}.>".to_owned()));
        assert!(!t.publish.iter().any(|s| s.contains(DEVICE_PLACEHOLDER)));
        let d = DevicePermissions::shipped().unwrap().for_device("pi-a");
        assert!(d.publish.contains(&"tributary.pi-a.>".to_owned()));
    }

    #[test]
    fn a_template_without_lists_or_with_unquoted_subjects_is_refused() {
        assert!(matches!(
            DevicePermissions::parse("{ user: x }"),
            Err(CredsError::Template {
                section: "publish",
                ..
            })
        ));
        let unquoted = "permissions { publish { allow: [ a.b ] } subscribe { allow: [\"x\"] } }";
        assert!(DevicePermissions::parse(unquoted).is_err());
        let ok = "permissions: { publish: { allow: [ \"a.@DEVICE@\", \"b\" ] }\n\
                  subscribe = { allow = [\"c\"] } }";
        let p = DevicePermissions::parse(ok).unwrap();
        assert_eq!(p.publish, ["a.@DEVICE@", "b"]);
        assert_eq!(p.subscribe, ["c"]);
    }
}
