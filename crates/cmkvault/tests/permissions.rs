//! `cmkvault serve` refuses a root key file that group or others can read, with one error
//! line naming the fix, and no panic.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{cmkvault, one_error_line, run, Server};
use tempfile::TempDir;

#[test]
fn serve_refuses_a_shared_root_key_with_the_fix_in_one_line() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let data = scratch.join("data");
    let data_arg = data.to_str().unwrap();
    // A first start initialises the directory.
    drop(Server::start(&data, scratch));
    let key = data.join("root.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let serve = cmkvault(&["serve", "--data", data_arg, "--listen", "127.0.0.1:0"]);
    let line = one_error_line(run(serve, scratch), "serve with a 0644 root.key");
    assert!(
        line.contains(&format!("chmod 600 {}", key.display())),
        "{line}"
    );
}
