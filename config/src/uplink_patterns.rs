//! Subject patterns and topic templates of `[[routes]]`: NATS wildcards
//! (`*` one token, a final `>` the rest) and topic names with `{1}`, `{2}`…
//! standing for the tokens the wildcards matched; and what a legal Kafka
//! topic name is.

/// One token of a parsed subject pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternToken {
    /// Must equal this token.
    Literal(String),
    /// `*`: any one token (captured).
    One,
    /// `>`: one or more tokens, last in the pattern (captured, joined by `.`).
    Rest,
}

/// Parses a NATS subject pattern into tokens.
pub fn parse_pattern(pattern: &str) -> Result<Vec<PatternToken>, String> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    let mut out = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        match *t {
            "" => return Err(format!("{pattern:?} has an empty token")),
            "*" => out.push(PatternToken::One),
            ">" if i + 1 == tokens.len() => out.push(PatternToken::Rest),
            ">" => return Err(format!("in {pattern:?}, `>` may only be the last token")),
            lit if lit.contains(|c: char| c.is_whitespace()) => {
                return Err(format!("{pattern:?} contains whitespace"));
            }
            lit => out.push(PatternToken::Literal(lit.to_owned())),
        }
    }
    Ok(out)
}

/// One part of a parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Copied as is.
    Literal(String),
    /// The token the n-th wildcard matched (0-based here, `{n+1}` in TOML).
    Capture(usize),
}

/// Parses a topic template such as `power.{1}` against a pattern with
/// `wildcards` wildcards.
pub fn parse_template(template: &str, wildcards: usize) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{template:?} has an unclosed `{{`"))?
                + open;
            let n: usize = rest[open + 1..close].parse().map_err(|_| {
                format!(
                    "{template:?}: `{}` is not a capture; write {{1}}, {{2}}… for the tokens the wildcards matched",
                    &rest[open..=close]
                )
            })?;
            if n == 0 || n > wildcards {
                return Err(format!(
                    "{template:?} uses {{{n}}} but the subject pattern has {wildcards} wildcard(s)"
                ));
            }
            parts.push(TemplatePart::Capture(n - 1));
            rest = &rest[close + 1..];
        } else {
            parts.push(TemplatePart::Literal(rest.to_owned()));
            rest = "";
        }
    }
    for p in &parts {
        if let TemplatePart::Literal(l) = p {
            if l.contains('}') || !l.chars().all(valid_topic_char) {
                return Err(format!(
                    "{template:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
                ));
            }
        }
    }
    if parts.is_empty() {
        return Err("the topic is empty".to_owned());
    }
    Ok(parts)
}

fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Whether `t` is a legal Kafka topic name.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 249 && t != "." && t != ".." && t.chars().all(valid_topic_char)
}
