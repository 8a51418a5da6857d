//! The `stocksync-agent` binary as an operator meets it: a bad or missing config stops it at
//! start-up with an error that names the file and the problem, before anything is opened.
//! (Also what makes `cargo test` build the binary that the end-to-end suites run.)

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stocksync-agent"))
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "stocksync-agent-cli-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_missing_config_is_named() {
    let out = agent()
        .args(["--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/agent.toml"), "{err}");
}

#[test]
fn a_mistyped_option_is_refused_by_name() {
    let path = temp_config(
        "typo",
        "agent_id = \"a1\"\nwarehouse = \"ams\"\n[journal]\nmax_backlogg = 5\n",
    );
    let out = agent()
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_backlogg"), "{err}");
}
