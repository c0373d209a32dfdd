//! Python rules: `eval` / `exec`, `os.system`, `subprocess` with
//! `shell=True` and unsafe deserialization (security); `snake_case`
//! functions and `CapWords` classes (linting); `def test_*` functions
//! with `assert` (testing).

use pgflow_core::protocol::Severity;
use tree_sitter::Node;

use super::checks::{
    any_descendant, excerpt, is_camel_case, is_snake_case, text, Findings, LanguageRules, TestCase,
};

/// The Python grammar and rules.
pub(crate) struct Python;

/// Calls that run arbitrary code.
const CODE_EVAL: [&str; 2] = ["eval", "exec"];
/// Calls that run a shell command.
const SHELL: [&str; 4] = ["os.system", "os.popen", "commands.getoutput", "os.spawnlp"];
/// Calls that deserialize untrusted data into objects.
const DESERIALIZE: [&str; 5] = [
    "pickle.loads",
    "pickle.load",
    "marshal.loads",
    "shelve.open",
    "yaml.unsafe_load",
];
/// Control flow that nests.
const NESTING: [&str; 6] = [
    "if_statement",
    "for_statement",
    "while_statement",
    "try_statement",
    "with_statement",
    "match_statement",
];

fn callee<'s>(call: Node<'_>, src: &'s str) -> Option<&'s str> {
    (call.kind() == "call")
        .then(|| call.child_by_field_name("function"))
        .flatten()
        .map(|f| text(f, src))
}

/// Whether a call passes `shell=True`.
fn passes_shell_true(call: Node<'_>, src: &str) -> bool {
    let Some(args) = call.child_by_field_name("arguments") else {
        return false;
    };
    let mut cursor = args.walk();
    let found = args.named_children(&mut cursor).any(|a| {
        a.kind() == "keyword_argument"
            && a.child_by_field_name("name")
                .is_some_and(|n| text(n, src) == "shell")
            && a.child_by_field_name("value")
                .is_some_and(|v| text(v, src) == "True")
    });
    found
}

impl LanguageRules for Python {
    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_python::LANGUAGE.into()
    }

    fn is_comment(&self, node: Node<'_>) -> bool {
        node.kind() == "comment"
    }

    fn function_name(&self, node: Node<'_>, src: &str) -> Option<String> {
        (node.kind() == "function_definition")
            .then(|| node.child_by_field_name("name"))
            .flatten()
            .map(|n| text(n, src).to_string())
    }

    fn is_nesting(&self, node: Node<'_>, _src: &str) -> bool {
        NESTING.contains(&node.kind())
    }

    fn security(&self, node: Node<'_>, src: &str, out: &mut Findings) {
        let Some(f) = callee(node, src) else {
            return;
        };
        if CODE_EVAL.contains(&f) {
            out.at(
                node,
                Severity::Error,
                "code_eval",
                format!("`{f}()` runs arbitrary code"),
            );
        } else if SHELL.contains(&f) {
            out.at(
                node,
                Severity::Error,
                "shell_command",
                format!("`{f}()` runs a shell command"),
            );
        } else if f.starts_with("subprocess.") && passes_shell_true(node, src) {
            out.at(
                node,
                Severity::Error,
                "shell_command",
                format!("`{f}(..., shell=True)` runs a shell command"),
            );
        } else if DESERIALIZE.contains(&f) {
            out.at(
                node,
                Severity::Warning,
                "unsafe_deserialization",
                format!("`{f}()` can build arbitrary objects from untrusted data"),
            );
        } else if f == "__import__" {
            out.at(
                node,
                Severity::Warning,
                "dynamic_import",
                "`__import__()` imports a module chosen at run time".to_string(),
            );
        }
    }

    fn naming(&self, node: Node<'_>, src: &str, out: &mut Findings) {
        let Some(name) = node.child_by_field_name("name").map(|n| text(n, src)) else {
            return;
        };
        match node.kind() {
            "function_definition" if !is_snake_case(name, &[]) => out.at(
                node,
                Severity::Warning,
                "naming_function",
                format!("function `{}` should be snake_case", excerpt(name)),
            ),
            "class_definition" if !is_camel_case(name) => out.at(
                node,
                Severity::Warning,
                "naming_class",
                format!("class `{}` should be CapWords", excerpt(name)),
            ),
            _ => {}
        }
    }

    fn test_case(&self, node: Node<'_>, src: &str) -> Option<TestCase> {
        let name = self.function_name(node, src)?;
        if !(name == "test" || name.starts_with("test_")) {
            return None;
        }
        let has_assertion = any_descendant(node, |n| {
            n.kind() == "assert_statement"
                || callee(n, src).is_some_and(|f| {
                    f.starts_with("self.assert")
                        || f.starts_with("pytest.")
                        || f.contains(".assert_")
                })
        });
        Some(TestCase {
            line: u32::try_from(node.start_position().row + 1).unwrap_or(u32::MAX),
            name,
            has_assertion,
        })
    }

    fn test_hint(&self) -> &'static str {
        "`def test_...` functions"
    }
}
