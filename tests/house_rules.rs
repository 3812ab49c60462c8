//! The size rules of the house, checked on every test run: no file in `src/` over 400 lines,
//! none in `tests/` over 600, and no `macro_rules!` over about 20 lines (a macro that long hides
//! code from rustfmt and from readers; plain functions or traits serve instead). Clippy checks
//! function length (`too_many_lines`, threshold in `clippy.toml`).

use std::path::{Path, PathBuf};

/// Longest file in `src/`.
const MAX_SRC_LINES: usize = 400;
/// Longest file in `tests/`.
const MAX_TEST_LINES: usize = 600;
/// Longest `macro_rules!`, from its first line to its closing brace ("about 20": the arms of
/// a two-backend test macro fit).
const MAX_MACRO_LINES: usize = 24;

/// The directories checked, with their file limit.
/// (`emulators/src` is not held to it yet: its Entra emulator still has files over 400 lines.)
const TREES: [(&str, usize); 3] = [
    ("src", MAX_SRC_LINES),
    ("tests", MAX_TEST_LINES),
    ("emulators/tests", MAX_TEST_LINES),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (name, lines) of each `macro_rules!` in `text`, counted from its first line to the line
/// that closes its outer brace.
fn macros(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("macro_rules!") else {
            continue;
        };
        let name = rest.trim().trim_end_matches('{').trim().to_owned();
        let mut depth = 0i32;
        for (offset, body_line) in lines[start..].iter().enumerate() {
            depth += body_line.matches('{').count() as i32;
            depth -= body_line.matches('}').count() as i32;
            if depth <= 0 && body_line.contains('}') {
                found.push((name, offset + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn files_and_macros_stay_small() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for (tree, limit) in TREES {
        let mut files = Vec::new();
        rust_files(&root.join(tree), &mut files);
        assert!(!files.is_empty(), "{tree}: no Rust files found");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let shown = file.strip_prefix(root).unwrap().display().to_string();
            let lines = text.lines().count();
            if lines > limit {
                problems.push(format!("{shown}: {lines} lines (at most {limit})"));
            }
            for (name, lines) in macros(&text) {
                if lines > MAX_MACRO_LINES {
                    problems.push(format!(
                        "{shown}: macro_rules! {name} is {lines} lines (at most {MAX_MACRO_LINES})"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "split these by job:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_macro_count_sees_the_closing_brace() {
    let text = "macro_rules! m {\n    ($x:expr) => {{\n        $x\n    }};\n}\nfn f() {}\n";
    assert_eq!(macros(text), [("m".to_owned(), 5)]);
}
