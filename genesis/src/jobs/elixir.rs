//! Elixir rules: `Code.eval_string` and friends, `System.cmd`, `:os.cmd`,
//! atom exhaustion and `binary_to_term` (security); `snake_case` function
//! names (linting); ExUnit `test "..."` blocks with `assert` / `refute`
//! (testing).
//!
//! In the Elixir grammar everything is a `call`: `def`, `if`, `test` are
//! calls whose `target` is an identifier, `Code.eval_string(...)` is a
//! call whose target is a `dot`.

use pgflow_core::protocol::Severity;
use tree_sitter::Node;

use super::checks::{
    any_descendant, excerpt, is_snake_case, text, Findings, LanguageRules, TestCase,
};

/// The Elixir grammar and rules.
pub(crate) struct Elixir;

/// Definitions of functions and macros.
const DEFINITIONS: [&str; 4] = ["def", "defp", "defmacro", "defmacrop"];
/// Control flow that nests.
const NESTING: [&str; 8] = [
    "if", "unless", "case", "cond", "with", "for", "try", "receive",
];
/// Calls that evaluate code built at run time.
const CODE_EVAL: [&str; 5] = [
    "Code.eval_string",
    "Code.eval_quoted",
    "Code.eval_file",
    "Code.compile_string",
    "Code.require_file",
];
/// Calls that run a shell command.
const SHELL: [&str; 4] = ["System.cmd", "System.shell", ":os.cmd", "Port.open"];
/// Calls that create atoms from data (the atom table is never collected).
const ATOMS: [&str; 2] = ["String.to_atom", "List.to_atom"];
/// Calls that deserialize untrusted data.
const DESERIALIZE: [&str; 1] = [":erlang.binary_to_term"];

/// The identifier a call is named by (`def`, `if`, `test`, ...), if its
/// target is a plain identifier.
fn call_name<'s>(node: Node<'_>, src: &'s str) -> Option<&'s str> {
    if node.kind() != "call" {
        return None;
    }
    let target = node.child_by_field_name("target")?;
    (target.kind() == "identifier").then(|| text(target, src))
}

/// `Module.function` of a remote call, whitespace removed.
fn remote_name(node: Node<'_>, src: &str) -> Option<String> {
    if node.kind() != "call" {
        return None;
    }
    let target = node.child_by_field_name("target")?;
    (target.kind() == "dot").then(|| text(target, src).split_whitespace().collect())
}

/// The first argument of a call.
fn first_argument(node: Node<'_>) -> Option<Node<'_>> {
    let mut cursor = node.walk();
    let args = node
        .named_children(&mut cursor)
        .find(|c| c.kind() == "arguments")?;
    args.named_child(0)
}

impl LanguageRules for Elixir {
    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_elixir::LANGUAGE.into()
    }

    fn is_comment(&self, node: Node<'_>) -> bool {
        node.kind() == "comment"
    }

    fn function_name(&self, node: Node<'_>, src: &str) -> Option<String> {
        if !DEFINITIONS.contains(&call_name(node, src)?) {
            return None;
        }
        let mut head = first_argument(node)?;
        // `def name(args) when guard`: the head is the guard's left side.
        if head.kind() == "binary_operator" {
            head = head.child_by_field_name("left")?;
        }
        let name = match head.kind() {
            "identifier" => head,
            "call" => head.child_by_field_name("target")?,
            _ => return None,
        };
        Some(text(name, src).to_string())
    }

    fn is_nesting(&self, node: Node<'_>, src: &str) -> bool {
        node.kind() == "anonymous_function"
            || call_name(node, src).is_some_and(|n| NESTING.contains(&n))
    }

    fn security(&self, node: Node<'_>, src: &str, out: &mut Findings) {
        let Some(remote) = remote_name(node, src) else {
            return;
        };
        let r = remote.as_str();
        let (severity, check, what) = if CODE_EVAL.contains(&r) {
            (
                Severity::Error,
                "code_eval",
                "evaluates code built at run time",
            )
        } else if SHELL.contains(&r) {
            (Severity::Error, "shell_command", "runs an external command")
        } else if ATOMS.contains(&r) {
            (
                Severity::Warning,
                "atom_exhaustion",
                "creates atoms from data (atoms are never garbage-collected)",
            )
        } else if DESERIALIZE.contains(&r) {
            (
                Severity::Warning,
                "unsafe_deserialization",
                "can build arbitrary terms from untrusted data",
            )
        } else {
            return;
        };
        out.at(node, severity, check, format!("`{}` {what}", excerpt(r)));
    }

    fn naming(&self, node: Node<'_>, src: &str, out: &mut Findings) {
        if let Some(name) = self.function_name(node, src) {
            if !is_snake_case(&name, &['?', '!']) {
                out.at(
                    node,
                    Severity::Warning,
                    "naming_function",
                    format!("function `{}` should be snake_case", excerpt(&name)),
                );
            }
        }
    }

    fn test_case(&self, node: Node<'_>, src: &str) -> Option<TestCase> {
        if call_name(node, src)? != "test" {
            return None;
        }
        let name = first_argument(node).filter(|a| a.kind() == "string")?;
        let has_assertion = any_descendant(node, |n| {
            call_name(n, src).is_some_and(|c| c.starts_with("assert") || c.starts_with("refute"))
        });
        Some(TestCase {
            line: u32::try_from(node.start_position().row + 1).unwrap_or(u32::MAX),
            name: text(name, src).trim_matches('"').to_string(),
            has_assertion,
        })
    }

    fn test_hint(&self) -> &'static str {
        "ExUnit `test \"...\" do` blocks"
    }
}
