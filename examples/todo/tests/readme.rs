//! The README's walk-through, run as written: every command between the
//! `readme-walkthrough` markers, in order, in one shell (so `ID=$(…)` carries over), in an
//! empty directory. Three substitutions only: `cargo run -q -p PACKAGE --` becomes the
//! already-built binary (a test cannot run cargo while cargo holds the build lock), the
//! relay's `serve` gets `--listen 127.0.0.1:0` and runs in the background for the whole
//! script, and `127.0.0.1:7878` becomes the address it listens on. Every command must do
//! what the README says it does: each has an expectation below, and a command the test does
//! not know fails it.

use std::path::{Path, PathBuf};
use std::process::Command;

use syncline_testkit::Child;
use syncline_testkit::relay::workspace_binary;

/// One command of the walk-through: its text as written (continuation lines joined).
#[derive(Debug)]
struct Step {
    text: String,
}

/// The commands of the `sh` blocks between the markers.
fn walkthrough(readme: &str) -> Vec<Step> {
    let begin = readme
        .find("<!-- readme-walkthrough: begin -->")
        .expect("the README marks where its walk-through begins");
    let end = readme
        .find("<!-- readme-walkthrough: end -->")
        .expect("the README marks where its walk-through ends");
    let mut steps = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme[begin..end].lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        steps.push(Step {
            text: std::mem::take(&mut pending),
        });
    }
    assert!(pending.is_empty(), "a command ends in a continuation");
    steps
}

/// What each command must print (its standard output; for `VAR=$(…)`, the captured value).
fn check(step: &Step, out: &str, vars: &std::collections::HashMap<&str, String>) {
    let text = step.text.as_str();
    let is_id = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let id = vars.get("ID").map_or("", String::as_str);
    let says = |needle: &str| {
        assert!(
            out.contains(needle),
            "`{text}` printed {out:?}, without {needle:?}"
        );
    };
    if text.contains(" add ") || text.contains(" device)") {
        assert!(is_id(out.trim()), "`{text}` printed {out:?}, not an id");
    } else if text.contains(" token ") {
        assert_eq!(
            out.trim().split('.').count(),
            3,
            "`{text}`: not a JWT: {out}"
        );
    } else if text.contains("./phone list --json") {
        let json: serde_json::Value = serde_json::from_str(out).expect("list --json is JSON");
        assert_eq!(
            json,
            serde_json::json!([{"id": id, "title": "Buy milk", "done": true}])
        );
    } else if text.contains("./phone list") {
        says(&format!("[ ] Buy milk  ({id})"));
    } else if text.contains("./laptop list") {
        says(&format!("[x] Buy milk  ({id})"));
    } else if text.contains(" done ") {
        assert_eq!(out, "", "`{text}`");
    } else if text.contains(" history ") {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "`{text}`: {out}");
        assert!(lines[0].ends_with("create") && lines[1].ends_with("done"));
    } else if text.contains(" sync ") {
        says("synced: sent");
        if text.contains("--verbose") {
            says("connection ");
            says("received 1 documents");
            says("ended: stopped by the app");
        }
    } else if text.contains("devices --json") {
        says(&vars["PHONE"]);
        says(&vars["LAPTOP"]);
    } else if text.contains(" doc ") {
        says("Buy milk");
    } else if text.contains(" deferred") {
        // Nothing is held back: the one todo is small.
        assert_eq!(out, "", "`{text}`");
    } else if text.contains(" fetch ") {
        says(&format!("fetched {id}: Buy milk"));
    } else {
        panic!("the README walk-through has a command this test does not check: `{text}`");
    }
}

/// The text as the shell runs it: the binaries instead of `cargo run`, the relay's address.
fn substitute(text: &str, todo: &Path, relay: &Path, addr: &str) -> String {
    let quoted = |p: &Path| format!("'{}'", p.display());
    text.replace("cargo run -q -p syncline-todo --", &quoted(todo))
        .replace("cargo run -q -p syncline-relay --", &quoted(relay))
        .replace("127.0.0.1:7878", addr)
}

/// `NAME=$(…)`: the variable a step assigns.
fn assigned(text: &str) -> Option<&str> {
    let (name, rest) = text.split_once("=$(")?;
    (rest.len() > 1 && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')).then_some(name)
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("read the README");
    let steps = walkthrough(&readme);
    assert!(steps.len() >= 15, "{steps:#?}");
    let todo = PathBuf::from(env!("CARGO_BIN_EXE_syncline-todo"));
    let relay_bin = workspace_binary("syncline-relay", "syncline-relay");
    let dir = tempfile::tempdir().expect("temp dir");

    // The relay's `serve`, as written, in the background for the whole walk-through.
    let (serve, steps): (Vec<Step>, Vec<Step>) =
        steps.into_iter().partition(|s| s.text.contains(" serve"));
    assert_eq!(serve.len(), 1, "one `serve` in the walk-through");
    let args: Vec<&str> = serve[0]
        .text
        .split_once("cargo run -q -p syncline-relay -- ")
        .expect("serve runs the relay with cargo")
        .1
        .split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let mut cmd = Command::new(&relay_bin);
    cmd.args(&args)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn");
    let mut relay = Child::spawn(cmd).expect("start the relay");
    let addr = loop {
        let line = relay
            .next_line()
            .expect("read the relay's output")
            .expect("the relay exited before listening");
        if let Some(addr) = line.strip_prefix("syncline-relay listening on ") {
            break addr.trim().to_owned();
        }
    };

    // One shell for every command, each output between markers.
    let mut script = String::from("set -eu\n");
    for (i, step) in steps.iter().enumerate() {
        script.push_str(&format!("echo '@@@ {i}'\n"));
        script.push_str(&substitute(&step.text, &todo, &relay_bin, &addr));
        script.push('\n');
        if let Some(name) = assigned(&step.text) {
            script.push_str(&format!("printf '%s\\n' \"${name}\"\n"));
        }
    }
    script.push_str("echo '@@@ end'\n");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("@@@ end"),
        "the walk-through failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    let mut outputs = stdout.split("@@@ ").skip(1).map(|chunk| {
        let (_, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        rest.to_owned()
    });
    let mut vars = std::collections::HashMap::new();
    for step in &steps {
        let out = outputs.next().expect("an output per command");
        if let Some(name) = assigned(&step.text) {
            vars.insert(name, out.trim().to_owned());
        }
        check(step, &out, &vars);
    }
    relay.kill().expect("stop the relay");
}
