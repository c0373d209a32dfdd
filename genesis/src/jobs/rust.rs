//! Rust rules: `unsafe`, `.unwrap()` / `.expect()`,
//! `std::process::Command`, `transmute` (security); `snake_case`
//! functions, `CamelCase` types, `SCREAMING_SNAKE_CASE` constants
//! (linting); `#[test]` functions with assertions (testing).

use pgflow_core::protocol::Severity;
use tree_sitter::Node;

use super::checks::{
    any_descendant, excerpt, is_camel_case, is_screaming_snake_case, is_snake_case, text, Findings,
    LanguageRules, TestCase,
};

/// The Rust grammar and rules.
pub(crate) struct Rust;

/// Control flow that nests (an `else if` continues its `if` instead).
const NESTING: [&str; 5] = [
    "if_expression",
    "match_expression",
    "for_expression",
    "while_expression",
    "loop_expression",
];
/// Attributes that make a function a test.
const TEST_ATTRIBUTES: [&str; 3] = ["test", "tokio::test", "async_std::test"];

/// Whether `node` (an item) carries the `unsafe` keyword itself.
fn has_unsafe_keyword(node: Node<'_>) -> bool {
    let mut cursor = node.walk();
    let found = node.children(&mut cursor).any(|c| {
        c.kind() == "unsafe"
            || (c.kind() == "function_modifiers" && {
                let mut inner = c.walk();
                let unsafe_modifier = c.children(&mut inner).any(|m| m.kind() == "unsafe");
                unsafe_modifier
            })
    });
    found
}

/// The attributes written just before `node` (outer attributes).
fn attributes<'s>(node: Node<'_>, src: &'s str) -> Vec<&'s str> {
    let mut found = Vec::new();
    let mut prev = node.prev_named_sibling();
    while let Some(p) = prev {
        match p.kind() {
            "attribute_item" => {
                if let Some(a) = p.named_child(0) {
                    let path = a.named_child(0).map(|n| text(n, src)).unwrap_or_default();
                    found.push(path);
                }
            }
            "line_comment" | "block_comment" => {}
            _ => break,
        }
        prev = p.prev_named_sibling();
    }
    found
}

impl LanguageRules for Rust {
    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_rust::LANGUAGE.into()
    }

    fn is_comment(&self, node: Node<'_>) -> bool {
        matches!(node.kind(), "line_comment" | "block_comment")
    }

    fn function_name(&self, node: Node<'_>, src: &str) -> Option<String> {
        (node.kind() == "function_item")
            .then(|| node.child_by_field_name("name"))
            .flatten()
            .map(|n| text(n, src).to_string())
    }

    fn is_nesting(&self, node: Node<'_>, _src: &str) -> bool {
        NESTING.contains(&node.kind())
            && !(node.kind() == "if_expression"
                && node.parent().is_some_and(|p| p.kind() == "else_clause"))
    }

    fn security(&self, node: Node<'_>, src: &str, out: &mut Findings) {
        match node.kind() {
            "unsafe_block" => out.at(
                node,
                Severity::Warning,
                "unsafe_code",
                "`unsafe` block: memory safety is not checked by the compiler".to_string(),
            ),
            "function_item" | "impl_item" | "trait_item" if has_unsafe_keyword(node) => out.at(
                node,
                Severity::Warning,
                "unsafe_code",
                format!("`unsafe` {}", node.kind().trim_end_matches("_item")),
            ),
            "call_expression" => {
                let Some(f) = node.child_by_field_name("function") else {
                    return;
                };
                if f.kind() == "field_expression" {
                    let method = f
                        .child_by_field_name("field")
                        .map(|m| text(m, src))
                        .unwrap_or_default();
                    match method {
                        "unwrap" => out.at(
                            node,
                            Severity::Warning,
                            "unwrap",
                            "`.unwrap()` panics on `None` / `Err`".to_string(),
                        ),
                        "expect" => out.at(
                            node,
                            Severity::Info,
                            "unwrap",
                            "`.expect()` panics on `None` / `Err`".to_string(),
                        ),
                        _ => {}
                    }
                    return;
                }
                let callee = text(f, src);
                if callee == "Command::new" || callee.ends_with("process::Command::new") {
                    out.at(
                        node,
                        Severity::Warning,
                        "process_command",
                        format!("`{}` starts an external process", excerpt(callee)),
                    );
                } else if callee == "transmute" || callee.ends_with("mem::transmute") {
                    out.at(
                        node,
                        Severity::Error,
                        "transmute",
                        "`transmute` reinterprets memory without checks".to_string(),
                    );
                }
            }
            "use_declaration" if text(node, src).contains("process::Command") => out.at(
                node,
                Severity::Info,
                "process_command",
                "imports `std::process::Command` (external processes)".to_string(),
            ),
            _ => {}
        }
    }

    fn naming(&self, node: Node<'_>, src: &str, out: &mut Findings) {
        let Some(name) = node.child_by_field_name("name").map(|n| text(n, src)) else {
            return;
        };
        let (ok, check, want) = match node.kind() {
            "function_item" => (is_snake_case(name, &[]), "naming_function", "snake_case"),
            "struct_item" | "enum_item" | "trait_item" | "type_item" | "union_item" => {
                (is_camel_case(name), "naming_type", "CamelCase")
            }
            "const_item" | "static_item" => (
                is_screaming_snake_case(name),
                "naming_constant",
                "SCREAMING_SNAKE_CASE",
            ),
            _ => return,
        };
        if !ok {
            out.at(
                node,
                Severity::Warning,
                check,
                format!("`{}` should be {want}", excerpt(name)),
            );
        }
    }

    fn test_case(&self, node: Node<'_>, src: &str) -> Option<TestCase> {
        let name = self.function_name(node, src)?;
        let attrs = attributes(node, src);
        if !attrs.iter().any(|a| TEST_ATTRIBUTES.contains(a)) {
            return None;
        }
        let has_assertion = attrs.contains(&"should_panic")
            || any_descendant(node, |n| {
                n.kind() == "macro_invocation"
                    && n.child_by_field_name("macro").is_some_and(|m| {
                        let m = text(m, src);
                        m.starts_with("assert") || m == "panic" || m == "unreachable"
                    })
            });
        Some(TestCase {
            line: u32::try_from(node.start_position().row + 1).unwrap_or(u32::MAX),
            name,
            has_assertion,
        })
    }

    fn test_hint(&self) -> &'static str {
        "`#[test]` functions"
    }
}
