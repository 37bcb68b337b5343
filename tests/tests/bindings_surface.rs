//! The native bindings lose nothing of the facade, and their READMEs show code that runs.
//!
//! - Every method the facade exports (`#[uniffi::export]` in `bindings/src`, read with `syn`)
//!   is called by the native API of Kotlin (`bindings/kotlin/src/main/kotlin`), Python
//!   (`bindings/python/python/syncline`) and Swift (`bindings/swift/Sources/Syncline`), under
//!   the name uniffi gives it in that language; every foreign callback trait is implemented
//!   there. A facade function no wrapper calls fails this test.
//! - The example that opens the Kotlin and Swift READMEs is, line for line, the code between
//!   the `readme-example` markers of a test the language's suite compiles and runs (the Python
//!   suite runs its README's block directly).
//!
//! The check is by name: a method that two objects share (`delete`, `get`, `heads`) counts as
//! called when one wrapper calls it on either.

mod common;

use std::path::Path;

use common::{root, rust_files};

/// A method of an exported object, or a constructor.
#[derive(Debug)]
struct Exported {
    object: String,
    method: String,
    constructor: bool,
}

/// The facade's exported methods and its foreign callback traits.
fn facade() -> (Vec<Exported>, Vec<String>) {
    let mut methods = Vec::new();
    let mut traits = Vec::new();
    for path in rust_files(&root().join("bindings/src")) {
        let source = std::fs::read_to_string(&path).expect("a facade file");
        let file = syn::parse_file(&source).expect("the facade parses");
        for item in file.items {
            match item {
                syn::Item::Impl(block) if exported(&block.attrs) => {
                    let syn::Type::Path(ty) = &*block.self_ty else {
                        continue;
                    };
                    let object = ty.path.segments.last().expect("a type").ident.to_string();
                    for item in block.items {
                        if let syn::ImplItem::Fn(f) = item
                            && matches!(f.vis, syn::Visibility::Public(_))
                        {
                            let constructor = f.attrs.iter().any(|a| {
                                a.path().segments.iter().any(|s| s.ident == "constructor")
                            });
                            methods.push(Exported {
                                object: object.clone(),
                                method: f.sig.ident.to_string(),
                                constructor,
                            });
                        }
                    }
                }
                syn::Item::Trait(t) if exported(&t.attrs) => traits.push(t.ident.to_string()),
                _ => {}
            }
        }
    }
    (methods, traits)
}

fn exported(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let segments: Vec<String> = a
            .path()
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        segments == ["uniffi", "export"]
    })
}

/// `create_json` as Kotlin and Swift name it: `createJson`.
fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Every source file under `dir` with one of `extensions`, concatenated.
fn sources(dir: &Path, extensions: &[&str]) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                // The generated module is not a wrapper.
                if path.file_name().is_some_and(|n| n != "_native") {
                    stack.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
            {
                text.push_str(&std::fs::read_to_string(&path).expect("a source file"));
                text.push('\n');
            }
        }
    }
    text
}

struct Language {
    name: &'static str,
    dir: &'static str,
    extensions: &'static [&'static str],
    /// The call of a method as this language's generated code names it.
    call: fn(&Exported) -> Vec<String>,
}

const LANGUAGES: &[Language] = &[
    Language {
        name: "Kotlin",
        dir: "bindings/kotlin/src/main/kotlin",
        extensions: &["kt"],
        call: |e| {
            let name = camel(&e.method);
            if e.constructor {
                vec![format!("{}.{name}(", e.object)]
            } else {
                vec![format!(".{name}("), format!(".`{name}`(")]
            }
        },
    },
    Language {
        name: "Python",
        dir: "bindings/python/python/syncline",
        extensions: &["py"],
        call: |e| {
            if e.constructor {
                vec![format!("{}.{}(", e.object, e.method)]
            } else {
                vec![format!(".{}(", e.method)]
            }
        },
    },
    Language {
        name: "Swift",
        dir: "bindings/swift/Sources/Syncline",
        extensions: &["swift"],
        call: |e| {
            let name = camel(&e.method);
            if e.constructor {
                vec![format!("{}.{name}(", e.object)]
            } else {
                vec![format!(".{name}("), format!(".`{name}`(")]
            }
        },
    },
];

#[test]
fn every_facade_function_is_reachable_from_each_native_api() {
    let (methods, traits) = facade();
    // The facade as issue 20 found it: 72 methods and 7 callback traits (more is fine).
    assert!(
        methods.len() >= 72,
        "read only {} exported methods",
        methods.len()
    );
    assert!(
        traits.len() >= 7,
        "read only {} callback traits",
        traits.len()
    );
    let mut missing = Vec::new();
    for language in LANGUAGES {
        let text = sources(&root().join(language.dir), language.extensions);
        for e in &methods {
            let calls = (language.call)(e);
            if !calls.iter().any(|c| text.contains(c.as_str())) {
                missing.push(format!(
                    "{}: {}::{} (looked for {calls:?})",
                    language.name, e.object, e.method
                ));
            }
        }
        for t in &traits {
            if !text.contains(t.as_str()) {
                missing.push(format!(
                    "{}: the callback trait {t} is not implemented",
                    language.name
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "facade functions no native wrapper reaches:\n{}",
        missing.join("\n")
    );
}

/// The lines between `begin` and `end` markers (exclusive), with their common indentation
/// removed and the fences of a Markdown block dropped.
fn block(text: &str, begin: &str, end: &str) -> Vec<String> {
    let start = text.find(begin).unwrap_or_else(|| panic!("no {begin:?}"));
    let stop = text[start..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?}"))
        + start;
    let lines: Vec<&str> = text[start + begin.len()..stop]
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let trimmed: Vec<String> = lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                l[indent..].trim_end().to_owned()
            }
        })
        .collect();
    let first = trimmed
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(trimmed.len());
    let last = trimmed
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(first, |i| i + 1);
    trimmed[first..last].to_vec()
}

#[test]
fn the_readme_examples_are_the_code_the_suites_run() {
    let pairs = [
        (
            "bindings/kotlin/README.md",
            "bindings/kotlin/src/test/kotlin/ReadmeExampleTest.kt",
        ),
        (
            "bindings/swift/README.md",
            "bindings/swift/Tests/SynclineTests/ReadmeExampleTests.swift",
        ),
    ];
    for (readme, test) in pairs {
        let readme_text = std::fs::read_to_string(root().join(readme)).expect(readme);
        let test_text = std::fs::read_to_string(root().join(test)).expect(test);
        let shown = block(
            &readme_text,
            "<!-- readme-example: begin -->",
            "<!-- readme-example: end -->",
        );
        let run = block(
            &test_text,
            "// readme-example: begin",
            "// readme-example: end",
        );
        assert!(!shown.is_empty(), "{readme} shows no example");
        assert_eq!(
            shown, run,
            "{readme}'s example differs from the code {test} runs"
        );
    }
}
