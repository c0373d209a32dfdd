//! Unit tests of the analysis (no database).

use std::sync::atomic::AtomicBool;

use pgflow_core::protocol::{AnalysisType, Severity};

use super::*;

fn check(lang: Language, code: &str, kind: AnalysisType) -> Analysis {
    analyse(lang, code, kind, &AtomicBool::new(false)).unwrap()
}

/// `(line, check)` of every finding.
fn found(a: &Analysis) -> Vec<(u32, &str)> {
    a.findings
        .iter()
        .map(|f| (f.line, f.check.as_str()))
        .collect()
}

#[test]
fn languages_are_recognised_by_name_and_extension() {
    assert_eq!(Language::parse("Elixir"), Some(Language::Elixir));
    assert_eq!(Language::parse("exs"), Some(Language::Elixir));
    assert_eq!(Language::parse("rs"), Some(Language::Rust));
    assert_eq!(Language::parse("python3"), Some(Language::Python));
    assert_eq!(Language::parse("cobol"), None);
}

#[test]
fn seed_000_job_parses_cleanly() {
    let a = check(Language::Elixir, "def foo, do: 42", AnalysisType::Quality);
    assert!(a.findings.is_empty(), "{:?}", a.findings);
    assert_eq!(a.quality_score, 1.0);
    assert_eq!(a.issues_count, 0);
}

#[test]
fn syntax_errors_carry_their_line() {
    let py = check(
        Language::Python,
        "def ok():\n    return 1\n\ndef broken(:\n    pass\n",
        AnalysisType::Quality,
    );
    assert!(
        found(&py).contains(&(4, "syntax_error")),
        "{:?}",
        py.findings
    );
    let rs = check(
        Language::Rust,
        "fn ok() -> i32 { 1 }\n\nfn broken( {\n",
        AnalysisType::Security,
    );
    assert!(
        found(&rs).contains(&(3, "syntax_error")),
        "{:?}",
        rs.findings
    );
    let ex = check(
        Language::Elixir,
        "defmodule M do\n  def f(x) do\n    x +\n  end\n",
        AnalysisType::Linting,
    );
    let lines: Vec<_> = found(&ex)
        .into_iter()
        .filter(|(_, c)| *c == "syntax_error")
        .collect();
    assert!(!lines.is_empty(), "{:?}", ex.findings);
    assert!(lines.iter().all(|(l, _)| (1..=4).contains(l)), "{lines:?}");
    assert!(py.quality_score < 1.0);
}

#[test]
fn python_security() {
    let code = "import os, subprocess, pickle\n\
                def run(x):\n    eval(x)\n    os.system('ls')\n    subprocess.run('ls', shell=True)\n    subprocess.run(['ls'])\n    pickle.loads(x)\n";
    let a = check(Language::Python, code, AnalysisType::Security);
    assert_eq!(
        found(&a),
        vec![
            (3, "code_eval"),
            (4, "shell_command"),
            (5, "shell_command"),
            (7, "unsafe_deserialization")
        ]
    );
    assert_eq!(a.findings[0].severity, Severity::Error);
}

#[test]
fn rust_security() {
    let code = "use std::process::Command;\n\
                fn f(x: Option<i32>) -> i32 {\n    unsafe { g() };\n    Command::new(\"ls\");\n    x.unwrap()\n}\n\
                unsafe fn g() {}\n";
    let a = check(Language::Rust, code, AnalysisType::Security);
    assert_eq!(
        found(&a),
        vec![
            (1, "process_command"),
            (3, "unsafe_code"),
            (4, "process_command"),
            (5, "unwrap"),
            (7, "unsafe_code")
        ]
    );
}

#[test]
fn elixir_security() {
    let code = "defmodule M do\n  def f(s) do\n    Code.eval_string(s)\n    System.cmd(\"ls\", [])\n    :os.cmd('ls')\n    String.to_atom(s)\n  end\nend\n";
    let a = check(Language::Elixir, code, AnalysisType::Security);
    assert_eq!(
        found(&a),
        vec![
            (3, "code_eval"),
            (4, "shell_command"),
            (5, "shell_command"),
            (6, "atom_exhaustion")
        ]
    );
}

#[test]
fn quality_reports_length_nesting_todos_and_long_lines() {
    let mut code = String::from("def long():\n    # TODO: split\n");
    for i in 0..55 {
        code.push_str(&format!("    x{i} = {i}\n"));
    }
    code.push_str("def deep(a):\n    if a:\n        for b in a:\n            while b:\n                with b:\n                    if b:\n                        pass\n");
    code.push_str(&format!("y = '{}'\n", "a".repeat(130)));
    let a = check(Language::Python, &code, AnalysisType::Quality);
    let f = found(&a);
    assert!(f.contains(&(1, "long_function")), "{f:?}");
    assert!(f.contains(&(2, "todo_comment")), "{f:?}");
    assert!(f.contains(&(63, "deep_nesting")), "{f:?}");
    assert!(f.contains(&(65, "long_line")), "{f:?}");
    assert_eq!(a.issues_count, 4);
    assert!(a.quality_score < 1.0 && a.quality_score > 0.0);
}

#[test]
fn else_if_chains_are_not_nesting() {
    let code = "fn f(x: i32) -> i32 {\n    if x == 1 { 1 } else if x == 2 { 2 } else if x == 3 { 3 } else if x == 4 { 4 } else if x == 5 { 5 } else { 0 }\n}\n";
    let a = check(Language::Rust, code, AnalysisType::Quality);
    assert!(a.findings.is_empty(), "{:?}", a.findings);
}

#[test]
fn linting_checks_naming() {
    let rs = check(
        Language::Rust,
        "struct my_type;\nconst limit: u32 = 1;\nfn DoIt() {}\nfn fine() {}\n",
        AnalysisType::Linting,
    );
    assert_eq!(
        found(&rs),
        vec![
            (1, "naming_type"),
            (2, "naming_constant"),
            (3, "naming_function")
        ]
    );
    let py = check(
        Language::Python,
        "class lower_case:\n    def camelCase(self): \n        pass\n",
        AnalysisType::Linting,
    );
    assert_eq!(
        found(&py),
        vec![
            (1, "naming_class"),
            (2, "naming_function"),
            (2, "trailing_whitespace")
        ]
    );
    let ex = check(
        Language::Elixir,
        "defmodule M do\n  def badName(x), do: x\n  def good?(x), do: x\n  defp ok_too!(x) when x > 0, do: x\nend\n",
        AnalysisType::Linting,
    );
    assert_eq!(found(&ex), vec![(2, "naming_function")]);
}

#[test]
fn testing_finds_tests_and_assertions() {
    let rs = check(
        Language::Rust,
        "#[test]\nfn adds() { assert_eq!(1 + 1, 2); }\n\n#[tokio::test]\nasync fn nothing() {}\n",
        AnalysisType::Testing,
    );
    assert_eq!(rs.tests, 2);
    assert_eq!(found(&rs), vec![(5, "test_without_assertion")]);
    let py = check(
        Language::Python,
        "def test_add():\n    assert 1 + 1 == 2\n",
        AnalysisType::Testing,
    );
    assert_eq!((py.tests, py.issues_count), (1, 0));
    let ex = check(
        Language::Elixir,
        "defmodule MTest do\n  use ExUnit.Case\n  test \"adds\" do\n    assert 1 + 1 == 2\n  end\n  test \"empty\" do\n    :ok\n  end\nend\n",
        AnalysisType::Testing,
    );
    assert_eq!(ex.tests, 2);
    assert_eq!(found(&ex), vec![(6, "test_without_assertion")]);
    let none = check(Language::Elixir, "def foo, do: 42", AnalysisType::Testing);
    assert_eq!(found(&none), vec![(1, "no_tests")]);
    assert!(none.summary.contains("0 tests"), "{}", none.summary);
}

#[test]
fn a_set_cancellation_flag_stops_the_analysis() {
    let code = "x = 1\n".repeat(100_000);
    let r = analyse(
        Language::Python,
        &code,
        AnalysisType::Quality,
        &AtomicBool::new(true),
    );
    assert_eq!(r, Err(JobError::Cancelled));
}

#[test]
fn findings_are_capped_but_counted() {
    let code = "eval(x)\n".repeat(MAX_REPORTED_FINDINGS + 10);
    let a = check(Language::Python, &code, AnalysisType::Security);
    assert_eq!(a.findings.len(), MAX_REPORTED_FINDINGS);
    assert_eq!(a.issues_count, (MAX_REPORTED_FINDINGS + 10) as u64);
}

#[tokio::test]
async fn unknown_languages_are_refused_and_min_duration_is_honoured() {
    let e = run("cobol", "x", AnalysisType::Quality, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e, JobError::UnsupportedLanguage("cobol".into()));
    let a = run(
        "elixir",
        "def foo, do: 42",
        AnalysisType::Quality,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    assert!(a.execution >= Duration::from_millis(50));
}
