//! Routing: which Kafka topic, encoding and key a NATS subject gets.
//!
//! Rules are tried in order; the first whose pattern matches wins, else the
//! default route (`[kafka] topic`, `encoding`, `key`). Patterns use NATS
//! wildcards (`*` one token, a final `>` the rest); the tokens they match can
//! be used in the topic name as `{1}`, `{2}`…

use std::sync::Arc;
use tributary_config::uplink::{
    Encoding, KeyMode, PatternToken, TemplatePart, UplinkConfig, parse_pattern, parse_template,
    valid_topic,
};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The topic.
    pub topic: Arc<str>,
    /// How the message becomes records.
    pub encoding: Encoding,
    /// What the records' key is.
    pub key: KeyMode,
}

/// A subject whose captured tokens do not make a legal topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject {subject:?} routes to {topic:?}, which is not a legal Kafka topic name")]
pub struct RouteError {
    /// The subject.
    pub subject: String,
    /// The topic it would have gone to.
    pub topic: String,
}

#[derive(Debug)]
struct Rule {
    pattern: Vec<PatternToken>,
    topic: Vec<TemplatePart>,
    /// The topic when the template has no captures.
    fixed: Option<Arc<str>>,
    encoding: Encoding,
    key: KeyMode,
}

/// The compiled routing table.
#[derive(Debug)]
pub struct Router {
    rules: Vec<Rule>,
    default: Target,
    outcomes: Arc<str>,
}

impl Router {
    /// Compiles the routes of a validated configuration.
    ///
    /// # Panics
    /// Never on a configuration that passed validation (which parses every
    /// pattern and template the same way).
    pub fn new(config: &UplinkConfig) -> Router {
        let rules = config
            .routes
            .iter()
            .map(|r| {
                let pattern = parse_pattern(r.subject.get_ref()).expect("validated pattern");
                let wildcards = pattern
                    .iter()
                    .filter(|t| !matches!(t, PatternToken::Literal(_)))
                    .count();
                let topic =
                    parse_template(r.topic.get_ref(), wildcards).expect("validated template");
                let fixed = match topic.as_slice() {
                    [TemplatePart::Literal(t)] => Some(Arc::from(t.as_str())),
                    _ => None,
                };
                Rule {
                    pattern,
                    topic,
                    fixed,
                    encoding: r.encoding,
                    key: r.key,
                }
            })
            .collect();
        Router {
            rules,
            outcomes: Arc::from(config.commands.outcome_topic.as_str()),
            default: Target {
                topic: Arc::from(config.kafka.topic.as_str()),
                encoding: config.kafka.encoding,
                key: config.kafka.key,
            },
        }
    }

    /// The topic command outcomes go to (`commands.outcome_topic`).
    pub fn outcome_topic(&self) -> &Arc<str> {
        &self.outcomes
    }

    /// The target of `subject`.
    pub fn route(&self, subject: &str) -> Result<Target, RouteError> {
        for rule in &self.rules {
            let Some(captures) = matches(&rule.pattern, subject) else {
                continue;
            };
            let topic = match &rule.fixed {
                Some(t) => t.clone(),
                None => {
                    let mut t = String::new();
                    for part in &rule.topic {
                        match part {
                            TemplatePart::Literal(l) => t.push_str(l),
                            TemplatePart::Capture(i) => t.push_str(captures[*i]),
                        }
                    }
                    if !valid_topic(&t) {
                        return Err(RouteError {
                            subject: subject.to_owned(),
                            topic: t,
                        });
                    }
                    Arc::from(t)
                }
            };
            return Ok(Target {
                topic,
                encoding: rule.encoding,
                key: rule.key,
            });
        }
        Ok(self.default.clone())
    }

    /// Topics known without seeing a message: the default topic and the
    /// rules' topics that have no captures.
    pub fn fixed_topics(&self) -> Vec<Arc<str>> {
        let mut out = vec![self.default.topic.clone()];
        for r in &self.rules {
            if let Some(t) = &r.fixed {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        out
    }
}

/// The tokens the wildcards of `pattern` matched in `subject`, or `None`.
fn matches<'s>(pattern: &[PatternToken], subject: &'s str) -> Option<Vec<&'s str>> {
    let mut captures = Vec::new();
    let mut rest = Some(subject);
    for token in pattern {
        let s = rest?;
        if let PatternToken::Rest = token {
            if s.is_empty() {
                return None;
            }
            captures.push(s);
            return Some(captures);
        }
        let (head, tail) = match s.split_once('.') {
            Some((h, t)) => (h, Some(t)),
            None => (s, None),
        };
        if head.is_empty() {
            return None;
        }
        match token {
            PatternToken::Literal(l) if l != head => return None,
            PatternToken::One => captures.push(head),
            _ => {}
        }
        rest = tail;
    }
    rest.is_none().then_some(captures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router(toml: &str) -> Router {
        let config: UplinkConfig = tributary_config::parse(toml, Path::new("t.toml")).unwrap();
        Router::new(&config)
    }

    fn pat(p: &str) -> Vec<PatternToken> {
        parse_pattern(p).unwrap()
    }

    #[test]
    fn star_matches_exactly_one_token_and_captures_it() {
        assert_eq!(matches(&pat("a.*.c"), "a.b.c"), Some(vec!["b"]));
        assert_eq!(matches(&pat("a.*.c"), "a.b.x.c"), None);
        assert_eq!(matches(&pat("a.*"), "a"), None);
        assert_eq!(matches(&pat("a.*"), "a.b.c"), None);
        assert_eq!(matches(&pat("*.*"), "x.y"), Some(vec!["x", "y"]));
        assert_eq!(matches(&pat("a.b"), "a.b"), Some(vec![]));
        assert_eq!(matches(&pat("a.b"), "a.bc"), None);
    }

    #[test]
    fn a_final_gt_matches_one_or_more_tokens() {
        assert_eq!(matches(&pat("a.>"), "a.b"), Some(vec!["b"]));
        assert_eq!(matches(&pat("a.>"), "a.b.c"), Some(vec!["b.c"]));
        assert_eq!(matches(&pat("a.>"), "a"), None);
        assert_eq!(matches(&pat("a.*.>"), "a.x.y.z"), Some(vec!["x", "y.z"]));
    }

    #[test]
    fn the_first_matching_rule_wins_and_captures_fill_the_topic() {
        let r = router(
            "[[routes]]\nsubject = \"tributary.*.power\"\ntopic = \"power.{1}\"\nencoding = \"passthrough\"\n\
             [[routes]]\nsubject = \"tributary.>\"\ntopic = \"all\"\nkey = \"none\"\n",
        );
        let t = r.route("tributary.pi-1.power").unwrap();
        assert_eq!(&*t.topic, "power.pi-1");
        assert_eq!(t.encoding, Encoding::Passthrough);
        let t = r.route("tributary.pi-1.temp").unwrap();
        assert_eq!(&*t.topic, "all");
        assert_eq!(t.key, KeyMode::None);
        let t = r.route("elsewhere.x").unwrap();
        assert_eq!(&*t.topic, "tributary.readings");
        assert_eq!(r.fixed_topics().len(), 2);
    }

    #[test]
    fn a_captured_token_that_is_no_topic_name_is_a_route_error() {
        let r = router("[[routes]]\nsubject = \"t.*.x\"\ntopic = \"p.{1}\"\n");
        let err = r.route("t.Zigbee:0x1.x").unwrap_err();
        assert_eq!(err.topic, "p.Zigbee:0x1");
    }
}
