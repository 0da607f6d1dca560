//! Where a key is written in a configuration file, if it is.
//!
//! Validation rules and `check` name keys as dotted paths
//! (`buffer.max_size`, `sensors.file[0].id`,
//! `kafka.properties.message.timeout.ms`); [`find`] looks such a path up in
//! the TOML text, so that an error points at the line the user wrote, and
//! so that a rule can tell a value the user chose from a default.

use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The byte range of the value of `key` in `source`, or `None` when the
/// file does not set it (it has its default) or is not valid TOML.
pub(crate) fn find(source: &str, key: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(source).ok()?;
    let parts: Vec<&str> = key.split('.').collect();
    in_table(doc.get_ref(), &parts)
}

/// Whether `source` sets `key`.
pub(crate) fn written(source: &str, key: &str) -> bool {
    find(source, key).is_some()
}

fn in_table(table: &DeTable<'_>, parts: &[&str]) -> Option<Range<usize>> {
    // A key may itself contain dots (`"message.timeout.ms"`): try the
    // shortest first, then longer joins.
    for n in 1..=parts.len() {
        let joined = parts[..n].join(".");
        let (name, indices) = split_indices(&joined);
        if let Some(value) = table.get(name) {
            if let Some(span) = in_value(value, &indices, &parts[n..]) {
                return Some(span);
            }
        }
    }
    None
}

fn in_value(
    value: &Spanned<DeValue<'_>>,
    indices: &[usize],
    rest: &[&str],
) -> Option<Range<usize>> {
    match (indices.split_first(), value.get_ref()) {
        (Some((i, more)), DeValue::Array(items)) => in_value(items.get(*i)?, more, rest),
        (Some(_), _) => None,
        (None, _) if rest.is_empty() => Some(value.span()),
        (None, DeValue::Table(t)) => in_table(t, rest),
        (None, _) => None,
    }
}

/// `file[0][1]` → (`file`, [0, 1]); a name without indices comes back whole.
fn split_indices(part: &str) -> (&str, Vec<usize>) {
    let Some(open) = part.find('[') else {
        return (part, Vec::new());
    };
    let indices = part[open..]
        .split(['[', ']'])
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<usize>, _>>();
    match indices {
        Ok(ix) => (&part[..open], ix),
        Err(_) => (part, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(source: &str, key: &str) -> Option<usize> {
        find(source, key).map(|s| source[..s.start].matches('\n').count() + 1)
    }

    #[test]
    fn keys_are_found_in_tables_arrays_of_tables_and_dotted_names() {
        let src = "[agent]\ndevice = \"d\"\n\n[buffer]\nmax_size = \"1 MiB\"\n\n[[sensors.file]]\nid = \"a\"\n[[sensors.file]]\nid = \"b\"\n\n[kafka.properties]\n\"message.timeout.ms\" = \"1\"\n";
        assert_eq!(line_of(src, "buffer.max_size"), Some(5));
        assert_eq!(line_of(src, "sensors.file[1].id"), Some(10));
        assert_eq!(
            line_of(src, "kafka.properties.message.timeout.ms"),
            Some(13)
        );
        assert_eq!(line_of(src, "buffer.segment_size"), None);
        assert_eq!(line_of(src, "sensors.file[2].id"), None);
    }

    #[test]
    fn inline_tables_and_dotted_keys_are_found_too() {
        let src = "nats.password = { file = \"/x\" }\nbuffer = { max_size = \"2 MiB\" }\n";
        assert_eq!(line_of(src, "nats.password"), Some(1));
        assert_eq!(line_of(src, "buffer.max_size"), Some(2));
        assert!(written(src, "nats.password"));
        assert!(!written("not toml [", "nats.password"));
    }
}
