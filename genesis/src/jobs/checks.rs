//! The checks shared by every language: one walk over the syntax tree
//! (syntax errors, function length, nesting depth, comments, and the
//! language's own security / naming / test rules), one pass over the lines
//! (long lines, trailing whitespace), and the score.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgflow_core::protocol::{AnalysisType, Finding, Severity};
use tree_sitter::{Node, Tree};

use super::{Analysis, JobError, Language, MAX_REPORTED_FINDINGS};

/// Longest function, in lines, before `long_function`.
pub(crate) const MAX_FUNCTION_LINES: usize = 50;
/// Deepest control-flow nesting before `deep_nesting`.
pub(crate) const MAX_NESTING: usize = 4;
/// Longest line, in characters, before `long_line`.
pub(crate) const MAX_LINE_CHARS: usize = 120;
/// Comment markers reported by `todo_comment`.
const TODO_MARKERS: [&str; 4] = ["TODO", "FIXME", "XXX", "HACK"];
/// Nodes visited between two looks at the cancellation flag.
const CANCEL_CHECK_EVERY: usize = 2048;
/// Longest source excerpt quoted in a message.
const EXCERPT_CHARS: usize = 40;

/// A test case found in the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestCase {
    /// Where it starts.
    pub line: u32,
    /// Its name.
    pub name: String,
    /// Whether its body asserts anything.
    pub has_assertion: bool,
}

/// What one language contributes to the walk.
pub(crate) trait LanguageRules: Sync {
    /// The tree-sitter grammar.
    fn grammar(&self) -> tree_sitter::Language;
    /// Whether `node` is a comment.
    fn is_comment(&self, node: Node<'_>) -> bool;
    /// The name of the function `node` defines, if it defines one.
    fn function_name(&self, node: Node<'_>, src: &str) -> Option<String>;
    /// Whether `node` opens a level of control-flow nesting.
    fn is_nesting(&self, node: Node<'_>, src: &str) -> bool;
    /// Dangerous constructs at `node`.
    fn security(&self, node: Node<'_>, src: &str, out: &mut Findings);
    /// Naming-convention problems at `node`.
    fn naming(&self, node: Node<'_>, src: &str, out: &mut Findings);
    /// The test case `node` defines, if it defines one.
    fn test_case(&self, node: Node<'_>, src: &str) -> Option<TestCase>;
    /// What a test looks like, for the `no_tests` message.
    fn test_hint(&self) -> &'static str;
}

/// The text of `node` (empty if it is not valid UTF-8, which cannot happen
/// for a `&str` source).
pub(crate) fn text<'s>(node: Node<'_>, src: &'s str) -> &'s str {
    node.utf8_text(src.as_bytes()).unwrap_or_default()
}

/// `s` cut to a short, one-line excerpt for a message.
pub(crate) fn excerpt(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default().trim();
    if line.chars().count() > EXCERPT_CHARS {
        format!("{}…", line.chars().take(EXCERPT_CHARS).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Whether any node below `node` (or `node` itself) satisfies `pred`.
pub(crate) fn any_descendant(node: Node<'_>, mut pred: impl FnMut(Node<'_>) -> bool) -> bool {
    let mut cursor = node.walk();
    loop {
        if pred(cursor.node()) {
            return true;
        }
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.node() == node {
                return false;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return false;
            }
        }
    }
}

/// `snake_case` (leading underscores allowed; `suffixes` may end it, as
/// Elixir's `?` and `!`).
pub(crate) fn is_snake_case(name: &str, suffixes: &[char]) -> bool {
    let core = name.trim_start_matches('_');
    let core = core.strip_suffix(suffixes).unwrap_or(core);
    core.is_empty()
        || (core
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !core.starts_with(|c: char| c.is_ascii_digit()))
}

/// `CamelCase`: starts with an upper-case letter, no underscores.
pub(crate) fn is_camel_case(name: &str) -> bool {
    let core = name.trim_start_matches('_');
    core.starts_with(|c: char| c.is_ascii_uppercase()) && !core.contains('_')
}

/// `SCREAMING_SNAKE_CASE`.
pub(crate) fn is_screaming_snake_case(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The findings of one analysis, with line numbers kept within the code.
#[derive(Debug)]
pub(crate) struct Findings {
    items: Vec<Finding>,
    lines: u32,
}

impl Findings {
    fn new(lines: usize) -> Self {
        Self {
            items: Vec::new(),
            lines: u32::try_from(lines.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Adds a finding at 1-based `line`.
    pub(crate) fn at_line(
        &mut self,
        line: usize,
        severity: Severity,
        check: &str,
        message: String,
    ) {
        let line = u32::try_from(line).unwrap_or(u32::MAX).clamp(1, self.lines);
        self.items.push(Finding {
            line,
            severity,
            check: check.to_string(),
            message,
        });
    }

    /// Adds a finding where `node` starts.
    pub(crate) fn at(&mut self, node: Node<'_>, severity: Severity, check: &str, message: String) {
        self.at_line(node.start_position().row + 1, severity, check, message);
    }
}

/// Everything the walk gathered.
#[derive(Debug)]
pub(crate) struct Collected {
    findings: Findings,
    lines: usize,
    tests: Vec<TestCase>,
    hint: &'static str,
}

/// Walks `tree` (parsed from `src`) and the lines of `src` for the checks of `kind`.
pub(crate) fn collect(
    rules: &dyn LanguageRules,
    tree: &Tree,
    src: &str,
    kind: AnalysisType,
    cancel: &AtomicBool,
) -> Result<Collected, JobError> {
    let lines = src.lines().count().max(1);
    let mut out = Findings::new(lines);
    let mut tests = Vec::new();
    let mut cursor = tree.walk();
    // Control-flow nesting of each ancestor on the cursor's path.
    let mut nesting_path: Vec<usize> = Vec::new();
    let mut visited = 0usize;
    'walk: loop {
        visited += 1;
        if visited % CANCEL_CHECK_EVERY == 0 && cancel.load(Ordering::Relaxed) {
            return Err(JobError::Cancelled);
        }
        let node = cursor.node();
        let nesting =
            nesting_path.last().copied().unwrap_or(0) + usize::from(rules.is_nesting(node, src));
        let descend = if node.is_error() {
            out.at(
                node,
                Severity::Error,
                "syntax_error",
                format!("syntax error: unexpected `{}`", excerpt(text(node, src))),
            );
            false // one report per broken region
        } else if node.is_missing() {
            out.at(
                node,
                Severity::Error,
                "syntax_error",
                format!("syntax error: missing `{}`", node.kind()),
            );
            false
        } else {
            visit(rules, node, src, kind, nesting, &mut out, &mut tests);
            true
        };
        if descend && cursor.goto_first_child() {
            nesting_path.push(nesting);
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                continue 'walk;
            }
            if !cursor.goto_parent() {
                break 'walk;
            }
            nesting_path.pop();
        }
    }
    match kind {
        AnalysisType::Quality => long_lines(src, &mut out, cancel)?,
        AnalysisType::Linting => trailing_whitespace(src, &mut out, cancel)?,
        AnalysisType::Security | AnalysisType::Testing => {}
    }
    Ok(Collected {
        findings: out,
        lines,
        tests,
        hint: rules.test_hint(),
    })
}

/// The checks of `kind` at one (well-formed) node.
fn visit(
    rules: &dyn LanguageRules,
    node: Node<'_>,
    src: &str,
    kind: AnalysisType,
    nesting: usize,
    out: &mut Findings,
    tests: &mut Vec<TestCase>,
) {
    match kind {
        AnalysisType::Quality => {
            if rules.is_comment(node) {
                let comment = text(node, src);
                if let Some(marker) = TODO_MARKERS.iter().find(|m| comment.contains(*m)) {
                    out.at(
                        node,
                        Severity::Info,
                        "todo_comment",
                        format!("{marker} comment: {}", excerpt(comment)),
                    );
                }
            }
            if let Some(name) = rules.function_name(node, src) {
                let length = node.end_position().row - node.start_position().row + 1;
                if length > MAX_FUNCTION_LINES {
                    out.at(
                        node,
                        Severity::Warning,
                        "long_function",
                        format!(
                            "function `{}` is {length} lines long (limit {MAX_FUNCTION_LINES})",
                            excerpt(&name)
                        ),
                    );
                }
            }
            if nesting == MAX_NESTING + 1 && rules.is_nesting(node, src) {
                out.at(
                    node,
                    Severity::Warning,
                    "deep_nesting",
                    format!("control flow nested {nesting} levels deep (limit {MAX_NESTING})"),
                );
            }
        }
        AnalysisType::Security => rules.security(node, src, out),
        AnalysisType::Linting => rules.naming(node, src, out),
        AnalysisType::Testing => tests.extend(rules.test_case(node, src)),
    }
}

fn long_lines(src: &str, out: &mut Findings, cancel: &AtomicBool) -> Result<(), JobError> {
    for (i, line) in src.lines().enumerate() {
        if i % CANCEL_CHECK_EVERY == 0 && cancel.load(Ordering::Relaxed) {
            return Err(JobError::Cancelled);
        }
        let chars = line.chars().count();
        if chars > MAX_LINE_CHARS {
            out.at_line(
                i + 1,
                Severity::Info,
                "long_line",
                format!("line is {chars} characters long (limit {MAX_LINE_CHARS})"),
            );
        }
    }
    Ok(())
}

fn trailing_whitespace(src: &str, out: &mut Findings, cancel: &AtomicBool) -> Result<(), JobError> {
    for (i, line) in src.lines().enumerate() {
        if i % CANCEL_CHECK_EVERY == 0 && cancel.load(Ordering::Relaxed) {
            return Err(JobError::Cancelled);
        }
        if line.ends_with([' ', '\t']) {
            out.at_line(
                i + 1,
                Severity::Info,
                "trailing_whitespace",
                "line ends with whitespace".to_string(),
            );
        }
    }
    Ok(())
}

fn weight(s: Severity) -> f64 {
    match s {
        Severity::Error => 1.0,
        Severity::Warning => 0.4,
        Severity::Info => 0.1,
    }
}

impl Collected {
    /// The result: testing findings added, findings ordered and capped, score.
    pub(crate) fn into_analysis(
        mut self,
        language: Language,
        kind: AnalysisType,
        execution: Duration,
    ) -> Analysis {
        if kind == AnalysisType::Testing {
            if self.tests.is_empty() {
                self.findings.at_line(
                    1,
                    Severity::Warning,
                    "no_tests",
                    format!("no tests found (expected {})", self.hint),
                );
            }
            for t in self.tests.iter().filter(|t| !t.has_assertion) {
                self.findings.at_line(
                    t.line as usize,
                    Severity::Info,
                    "test_without_assertion",
                    format!("test `{}` asserts nothing", excerpt(&t.name)),
                );
            }
        }
        let mut findings = self.findings.items;
        findings.sort_by(|a, b| a.line.cmp(&b.line).then(b.severity.cmp(&a.severity)));
        let issues_count = findings.len() as u64;
        let penalty: f64 = findings.iter().map(|f| weight(f.severity)).sum();
        let density = penalty * 10.0 / self.lines.max(10) as f64;
        let quality_score = ((1.0 / (1.0 + density)) * 1000.0).round() / 1000.0;
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let mut summary = format!(
            "{} {} analysis of {} lines: {issues_count} issues ({errors} errors)",
            language.name(),
            kind_name(kind),
            self.lines,
        );
        if kind == AnalysisType::Testing {
            summary.push_str(&format!(", {} tests", self.tests.len()));
        }
        if findings.len() > MAX_REPORTED_FINDINGS {
            findings.truncate(MAX_REPORTED_FINDINGS);
            summary.push_str(&format!(", first {MAX_REPORTED_FINDINGS} listed"));
        }
        Analysis {
            language,
            findings,
            issues_count,
            quality_score,
            lines: self.lines,
            tests: self.tests.len(),
            summary,
            execution,
        }
    }
}

/// The protocol name of an analysis type.
pub(crate) fn kind_name(kind: AnalysisType) -> &'static str {
    match kind {
        AnalysisType::Quality => "quality",
        AnalysisType::Security => "security",
        AnalysisType::Linting => "linting",
        AnalysisType::Testing => "testing",
    }
}
