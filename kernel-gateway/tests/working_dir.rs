//! Where kernels run: in the site's working area for their user (`kernel_working_root`), with it
//! as `HOME`, never in a directory the client names, unless the gateway mirrors working
//! directories (Enterprise Gateway's `mirror_working_dirs`). Written as the attack: alice's
//! client asks to run in bob's area.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{ALICE, BOB, Gateway, config};
use hyper::{Method, StatusCode};
use serde_json::json;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-workdir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Start a python3 kernel as `token` asking for `dir`; its `os.getcwd()` and `HOME`.
async fn where_it_runs(gw: &Gateway, token: &str, dir: &Path) -> (String, String) {
    let body = json!({"name": "python3", "env": {"KERNEL_WORKING_DIR": dir}}).to_string();
    let (status, _, body) = gw
        .call(Method::POST, "/api/kernels", Some(token), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    let mut ws = gw.ws(token, id, "s", false).await;
    let outcome = ws
        .execute("import os; print(os.getcwd()); print(os.environ.get('HOME'))")
        .await;
    let mut lines = outcome.stdout.lines().map(str::to_owned);
    match (lines.next(), lines.next()) {
        (Some(cwd), Some(home)) => (cwd, home),
        _ => panic!("no cwd and home: {outcome:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernels_run_in_their_users_area_whatever_directory_the_client_names() {
    let root = scratch("root");
    let mut c = config();
    c.kernel_working_root = Some(root.clone());
    let gw = Gateway::start(c).await;
    // bob's area exists (his kernel made it); alice asks for it.
    let (bob_cwd, bob_home) = where_it_runs(&gw, BOB, Path::new("/")).await;
    let bob_area = root.join("bob");
    assert_eq!(Path::new(&bob_cwd), bob_area);
    assert_eq!(
        Path::new(&bob_home),
        bob_area,
        "a kernel's home is its area"
    );
    let (cwd, home) = where_it_runs(&gw, ALICE, &bob_area).await;
    assert_eq!(
        Path::new(&cwd),
        root.join("alice"),
        "alice ran in bob's area"
    );
    assert_eq!(Path::new(&home), root.join("alice"));
    // Each area is its owner's only.
    use std::os::unix::fs::PermissionsExt;
    for user in ["alice", "bob"] {
        let mode = std::fs::metadata(root.join(user))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{user}");
    }
    gw.stop().await;
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirroring_gateway_runs_kernels_where_the_lab_is() {
    let root = scratch("mirror-root");
    let lab = scratch("mirror-lab");
    let mut c = config();
    c.kernel_working_root = Some(root.clone());
    c.mirror_working_dirs = true;
    let gw = Gateway::start(c).await;
    let (cwd, _) = where_it_runs(&gw, ALICE, &lab).await;
    assert_eq!(Path::new(&cwd), lab);
    // A directory that does not exist here: the user's area.
    let (cwd, _) = where_it_runs(&gw, ALICE, &lab.join("gone")).await;
    assert_eq!(Path::new(&cwd), root.join("alice"));
    gw.stop().await;
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&lab).unwrap();
}
