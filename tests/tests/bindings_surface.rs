//! The native bindings lose nothing of the facade, and their READMEs show code that runs.
//!
//! - Every function the facade exports (`#[uniffi::export]` in `bindings/src`, read with
//!   `syn`) is called by the native API of Kotlin (`bindings/kotlin/src/main/kotlin`), Python
//!   (`bindings/python/python/syncline`) and Swift (`bindings/swift/Sources/Syncline`): on the
//!   handle the wrapper of that object keeps (`inner`, `_inner`, `core`), in that wrapper's
//!   files, under the name uniffi gives it in that language, with comments and string literals
//!   left out. Every foreign callback trait is implemented by a class there. A facade function
//!   no wrapper calls fails this test, and so does an exported object with no wrapper.
//! - The example that opens the Kotlin and Swift READMEs is, line for line, the code between
//!   the `readme-example` markers of a test the language's suite compiles and runs (the Python
//!   suite runs its README's block directly).

mod common;

use common::{root, rust_files};

/// A function the facade exports: a method (or constructor) of an object, or a free function.
#[derive(Debug)]
struct Exported {
    object: Option<String>,
    method: String,
    constructor: bool,
}

/// The facade's exported functions and its foreign callback traits.
fn facade() -> (Vec<Exported>, Vec<String>) {
    let mut functions = Vec::new();
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
                        // uniffi exports every function of an exported impl.
                        if let syn::ImplItem::Fn(f) = item {
                            let constructor = f.attrs.iter().any(|a| {
                                a.path().segments.iter().any(|s| s.ident == "constructor")
                            });
                            functions.push(Exported {
                                object: Some(object.clone()),
                                method: f.sig.ident.to_string(),
                                constructor,
                            });
                        }
                    }
                }
                syn::Item::Fn(f) if exported(&f.attrs) => functions.push(Exported {
                    object: None,
                    method: f.sig.ident.to_string(),
                    constructor: false,
                }),
                syn::Item::Trait(t) if exported(&t.attrs) => traits.push(t.ident.to_string()),
                _ => {}
            }
        }
    }
    (functions, traits)
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

/// `source` with its comments and string literals blanked out, so that neither a docstring nor
/// a comment nor a message counts as a call. `hash_comments`: `#` starts a comment (Python);
/// otherwise `//` and `/* */` do (Kotlin, Swift). Triple-quoted strings are Python's and
/// Kotlin's raw strings and Swift's multi-line ones alike.
fn code_only(source: &str, hash_comments: bool) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while i < chars.len() {
        let c = chars[i];
        let line_comment = if hash_comments { c == '#' } else { at(i, "//") };
        if line_comment {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if !hash_comments && at(i, "/*") {
            i += 2;
            while i < chars.len() && !at(i, "*/") {
                i += 1;
            }
            i += 2;
        } else if at(i, "\"\"\"") || (hash_comments && at(i, "\'\'\'")) {
            let quote: String = chars[i..i + 3].iter().collect();
            i += 3;
            while i < chars.len() && !at(i, &quote) {
                i += 1;
            }
            i += 3;
            out.push_str("\"\"");
        } else if c == '"' || (hash_comments && c == '\'') {
            i += 1;
            while i < chars.len() && chars[i] != c && chars[i] != '\n' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where one language's native API calls one object of the facade.
struct Wrapper {
    object: &'static str,
    /// The files of the wrapper (and of what it shares with another).
    files: &'static [&'static str],
    /// The expressions the wrapper calls the object on (its handle, or the type itself for a
    /// constructor).
    receivers: &'static [&'static str],
}

struct Language {
    name: &'static str,
    dir: &'static str,
    hash_comments: bool,
    wrappers: &'static [Wrapper],
    /// The name uniffi gives a Rust function in this language.
    name_of: fn(&str) -> String,
}

const LANGUAGES: &[Language] = &[
    Language {
        name: "Kotlin",
        dir: "bindings/kotlin/src/main/kotlin/dev/syncline",
        hash_comments: false,
        name_of: camel,
        wrappers: &[
            Wrapper {
                object: "FfiStore",
                files: &["Store.kt"],
                receivers: &["inner.", "FfiStore."],
            },
            Wrapper {
                object: "FfiDocument",
                files: &["Document.kt"],
                receivers: &["inner."],
            },
            Wrapper {
                object: "FfiDocumentView",
                files: &["DocumentView.kt"],
                receivers: &["inner."],
            },
            Wrapper {
                object: "FfiSyncClient",
                files: &["SyncClient.kt"],
                receivers: &["inner.", "FfiSyncClient."],
            },
            Wrapper {
                object: "FfiSubscription",
                files: &["Flows.kt", "SyncClient.kt"],
                receivers: &["subscription."],
            },
        ],
    },
    Language {
        name: "Python",
        dir: "bindings/python/python/syncline",
        hash_comments: true,
        name_of: str::to_owned,
        wrappers: &[
            Wrapper {
                object: "FfiStore",
                files: &["_store.py"],
                receivers: &["inner.", "FfiStore."],
            },
            // Document and DocumentView share their reads (`Readable`, in _view.py).
            Wrapper {
                object: "FfiDocument",
                files: &["_document.py", "_view.py"],
                receivers: &["inner.", "_view."],
            },
            Wrapper {
                object: "FfiDocumentView",
                files: &["_view.py"],
                receivers: &["inner.", "_view."],
            },
            Wrapper {
                object: "FfiSyncClient",
                files: &["_client.py"],
                receivers: &["inner.", "FfiSyncClient."],
            },
            Wrapper {
                object: "FfiSubscription",
                files: &["_streams.py"],
                receivers: &["subscription."],
            },
        ],
    },
    Language {
        name: "Swift",
        dir: "bindings/swift/Sources/Syncline",
        hash_comments: false,
        name_of: camel,
        wrappers: &[
            Wrapper {
                object: "FfiStore",
                files: &["Store.swift"],
                receivers: &["core.", "FfiStore."],
            },
            Wrapper {
                object: "FfiDocument",
                files: &["Document.swift"],
                receivers: &["core."],
            },
            Wrapper {
                object: "FfiDocumentView",
                files: &["DocumentView.swift"],
                receivers: &["core."],
            },
            Wrapper {
                object: "FfiSyncClient",
                files: &["SyncClient.swift"],
                receivers: &["core.", "FfiSyncClient."],
            },
            Wrapper {
                object: "FfiSubscription",
                files: &["Streams.swift"],
                receivers: &["subscription."],
            },
        ],
    },
];

impl Language {
    fn code(&self, files: &[&str]) -> String {
        files
            .iter()
            .map(|f| {
                let path = root().join(self.dir).join(f);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                code_only(&text, self.hash_comments)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn all_code(&self) -> String {
        let dir = root().join(self.dir);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".kt") || n.ends_with(".py") || n.ends_with(".swift"))
            .collect();
        names.sort();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.code(&names)
    }
}

/// True if a class (or Kotlin `object`) of `code` declares that it implements `name`.
fn implements(code: &str, name: &str) -> bool {
    code.lines().any(|line| {
        let declares = line.contains("class ") || line.contains("object");
        let after = line.find([':', '(']).map(|i| &line[i..]);
        declares
            && after.is_some_and(|rest| {
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|word| word == name)
            })
    })
}

#[test]
fn every_facade_function_is_reachable_from_each_native_api() {
    let (functions, traits) = facade();
    // The facade as issue 20 found it: 72 functions and 7 callback traits (more is fine).
    assert!(
        functions.len() >= 72,
        "read only {} exported functions",
        functions.len()
    );
    assert!(
        traits.len() >= 7,
        "read only {} callback traits",
        traits.len()
    );
    let mut missing = Vec::new();
    for language in LANGUAGES {
        let everything = language.all_code();
        for f in &functions {
            let name = (language.name_of)(&f.method);
            let (code, receivers): (String, Vec<&str>) = match &f.object {
                None => (everything.clone(), vec![""]),
                Some(object) => {
                    let Some(wrapper) = language.wrappers.iter().find(|w| w.object == object)
                    else {
                        missing.push(format!("{}: no wrapper of {object}", language.name));
                        continue;
                    };
                    let receivers = if f.constructor {
                        wrapper
                            .receivers
                            .iter()
                            .copied()
                            .filter(|r| r.starts_with("Ffi"))
                            .collect()
                    } else {
                        wrapper
                            .receivers
                            .iter()
                            .copied()
                            .filter(|r| !r.starts_with("Ffi"))
                            .collect()
                    };
                    (language.code(wrapper.files), receivers)
                }
            };
            let calls: Vec<String> = receivers.iter().map(|r| format!("{r}{name}(")).collect();
            if !calls.iter().any(|c| code.contains(c.as_str())) {
                missing.push(format!(
                    "{}: {}::{} (looked for {calls:?})",
                    language.name,
                    f.object.as_deref().unwrap_or("(free function)"),
                    f.method
                ));
            }
        }
        for t in &traits {
            if !implements(&everything, t) {
                missing.push(format!(
                    "{}: no class implements the callback trait {t}",
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

#[test]
fn comments_and_strings_do_not_count_as_calls() {
    let kotlin = code_only(
        "val a = inner.get(x) // inner.put(\n/* inner.delete( */ \"inner.heads(\"",
        false,
    );
    assert!(kotlin.contains("inner.get("));
    assert!(
        !kotlin.contains("inner.put(")
            && !kotlin.contains("inner.delete(")
            && !kotlin.contains("inner.heads(")
    );
    let python = code_only(
        "x = self._inner.get(p)  # self._inner.put(\n\"\"\"doc.create(\"\"\"\n'inner.list('",
        true,
    );
    assert!(python.contains("_inner.get("));
    assert!(
        !python.contains("inner.put(")
            && !python.contains("create(")
            && !python.contains("inner.list(")
    );
    assert!(implements(
        "final class ChangeForwarder: FfiChangeListener {",
        "FfiChangeListener"
    ));
    assert!(implements(
        "class ChangeSink(FfiChangeListener):",
        "FfiChangeListener"
    ));
    assert!(!implements(
        "from ._native import FfiChangeListener",
        "FfiChangeListener"
    ));
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
