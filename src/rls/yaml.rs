//! A small YAML document tree that remembers the line of every node.
//!
//! The configuration's errors must name the file, the line and the field (as `path:12: field
//! \`unit\`: ...`), and serde's YAML deserializers forget where a value came from once it is
//! parsed. So the file is read as events from `yaml-rust2` into this tree, and
//! [`super::config`] validates the tree by hand. The tree is bounded (nesting depth and node
//! count) and refuses aliases, so a hostile or broken file cannot make a reload expensive.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The deepest nesting accepted (mappings and sequences).
pub const MAX_DEPTH: usize = 64;

/// The most nodes one document may hold.
pub const MAX_NODES: usize = 200_000;

/// A YAML value with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The line of the value's first character.
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// What a [`Node`] holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An explicit or implicit null (`~`, `null`, or nothing).
    Null,
    /// A scalar's text; `plain` is false for quoted and block scalars (always strings).
    Scalar {
        /// The text.
        text: String,
        /// Whether the scalar was unquoted (so `true` or `12` are a boolean or a number).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order (duplicate keys are refused while parsing).
    Map(Vec<(Node, Node)>),
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    /// The line (1-based) where the problem was found.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Value {
    /// A short name of the kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses the first document of `text`; an empty text is [`Value::Null`].
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(error) = parser.load(&mut builder, false) {
        return Err(YamlError {
            line: error.marker().line(),
            message: error.info().to_string(),
        });
    }
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder.root.unwrap_or(Node {
        line: 1,
        value: Value::Null,
    }))
}

/// One open collection while events arrive.
#[derive(Debug)]
enum Open {
    Seq(Node),
    /// A mapping, and its key when the value has not arrived yet.
    Map(Node, Option<Node>),
}

#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
    nodes: usize,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, line: usize, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                line,
                message: message.into(),
            });
        }
    }

    fn open(&mut self, open: Open, line: usize) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(line, format!("nested deeper than {MAX_DEPTH} levels"));
            return;
        }
        self.stack.push(open);
    }

    /// Adds a finished node to the innermost open collection (or makes it the root).
    fn add(&mut self, node: Node) {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.fail(node.line, format!("more than {MAX_NODES} values"));
            return;
        }
        let mut duplicate = None;
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open::Seq(seq)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Open::Map(map, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        if let Value::Scalar { text, .. } = &key.value
                            && entries
                                .iter()
                                .any(|(seen, _)| matches!(&seen.value, Value::Scalar { text: t, .. } if t == text))
                        {
                            duplicate = Some((key.line, text.clone()));
                        }
                        entries.push((key, node));
                    }
                }
            },
        }
        if let Some((line, key)) = duplicate {
            self.fail(line, format!("duplicate mapping key `{key}`"));
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match event {
            Event::Alias(_) => self.fail(line, "YAML aliases are not supported"),
            Event::Scalar(text, style, _, _) => {
                let plain = style == TScalarStyle::Plain;
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                self.add(Node { line, value });
            }
            Event::SequenceStart(..) => self.open(
                Open::Seq(Node {
                    line,
                    value: Value::Seq(Vec::new()),
                }),
                line,
            ),
            Event::MappingStart(..) => self.open(
                Open::Map(
                    Node {
                        line,
                        value: Value::Map(Vec::new()),
                    },
                    None,
                ),
                line,
            ),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Open::Seq(node)) | Some(Open::Map(node, _)) => self.add(node),
                None => self.fail(line, "unbalanced collection"),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        match &node.value {
            Value::Scalar { text, .. } => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn lines_are_remembered() {
        let node = parse("domain: a\ndescriptors:\n  - key: k\n    value: v\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        assert_eq!(scalar(&entries[0].1), "a");
        assert_eq!(entries[1].0.line, 2);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a list")
        };
        let Value::Map(rule) = &items[0].value else {
            panic!("not a map")
        };
        assert_eq!(rule[1].0.line, 4);
        assert_eq!(scalar(&rule[1].1), "v");
    }

    #[test]
    fn quoted_scalars_are_not_plain_and_empty_is_null() {
        let node = parse("a: '12'\nb: 12\nc:\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        assert!(matches!(
            entries[0].1.value,
            Value::Scalar { plain: false, .. }
        ));
        assert!(matches!(
            entries[1].1.value,
            Value::Scalar { plain: true, .. }
        ));
        assert_eq!(entries[2].1.value, Value::Null);
        assert_eq!(parse("").unwrap().value, Value::Null);
    }

    #[test]
    fn duplicate_keys_aliases_and_syntax_errors_are_refused() {
        assert_eq!(parse("a: 1\na: 2\n").unwrap_err().line, 2);
        assert!(
            parse("a: &x 1\nb: *x\n")
                .unwrap_err()
                .message
                .contains("alias")
        );
        assert!(parse("a: [1, 2\n").is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
    }
}
