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
    where_kernel_runs(
        gw,
        "python3",
        token,
        dir,
        "import os; print(os.getcwd()); print(os.environ.get('HOME'))",
    )
    .await
}

/// Start a `kernel` kernel as `token` asking for `dir`; the first two lines `code` prints
/// (its working directory and `HOME`).
async fn where_kernel_runs(
    gw: &Gateway,
    kernel: &str,
    token: &str,
    dir: &Path,
    code: &str,
) -> (String, String) {
    let body = json!({"name": kernel, "env": {"KERNEL_WORKING_DIR": dir}}).to_string();
    let (status, _, body) = gw
        .call(Method::POST, "/api/kernels", Some(token), Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap();
    let mut ws = gw.ws(token, id, "s", false).await;
    let outcome = ws.execute(code).await;
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

/// The sites' R kernel (IRkernel from Debian: `scripts/test` installs `r-cran-irkernel`, whose
/// kernelspec `ir` the gateway finds in `/usr/share/jupyter/kernels` by the standard search)
/// lives by the same rules: in the user's area, with it as `HOME`, not where the client says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r_kernel_runs_in_its_users_area_too() {
    let debian_spec = Path::new("/usr/share/jupyter/kernels/ir/kernel.json");
    assert!(
        debian_spec.is_file(),
        "no {}: install Debian's r-cran-irkernel (scripts/test does)",
        debian_spec.display()
    );
    let root = scratch("r-root");
    let mut c = config();
    c.kernel_working_root = Some(root.clone());
    c.site_name = Some("LUMI Bridge".into());
    let gw = Gateway::start(c).await;
    let (status, _, specs) = gw
        .call(Method::GET, "/api/kernelspecs", Some(ALICE), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{specs}");
    assert_eq!(
        specs["kernelspecs"]["ir"]["spec"]["display_name"], "R at LUMI Bridge",
        "{specs}"
    );
    assert_eq!(
        specs["kernelspecs"]["ir"]["spec"]["language"], "R",
        "{specs}"
    );
    let (cwd, home) = where_kernel_runs(
        &gw,
        "ir",
        ALICE,
        Path::new("/"),
        r#"cat(getwd(), Sys.getenv("HOME"), sep = "\n")"#,
    )
    .await;
    assert_eq!(Path::new(&cwd), root.join("alice"));
    assert_eq!(Path::new(&home), root.join("alice"));
    gw.stop().await;
    std::fs::remove_dir_all(&root).unwrap();
}
