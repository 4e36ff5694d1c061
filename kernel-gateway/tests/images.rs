//! `images/`: the Dockerfiles are multi-stage where they build, pin every base image and
//! package, run as non-root, and agree with what the project's scripts install and with the
//! Kubernetes launcher (paths, the kernel-side launcher). No Docker engine runs here, so the
//! kernel-side launcher script is run for real: it starts the venv's ipykernel from the
//! environment the launcher sets, and a Jupyter client executes `1+1` with the same key.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kernel_gateway::launcher::k8s::{CONNECTION_FILE, KERNEL_LAUNCHER};

fn images() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../images")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(images().join(rel)).unwrap_or_else(|e| panic!("images/{rel}: {e}"))
}

/// Numeric parts of a version, for comparisons.
fn version(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect()
}

fn satisfies(pinned: &str, spec: &str) -> bool {
    let v = version(pinned);
    spec.split(',').map(str::trim).all(|c| {
        if let Some(x) = c.strip_prefix(">=") {
            v >= version(x)
        } else if let Some(x) = c.strip_prefix("<=") {
            v <= version(x)
        } else if let Some(x) = c.strip_prefix("==") {
            v == version(x)
        } else if let Some(x) = c.strip_prefix('<') {
            v < version(x)
        } else if let Some(x) = c.strip_prefix('>') {
            v > version(x)
        } else {
            panic!("unsupported specifier {c:?}")
        }
    })
}

fn requirements(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let i = l
                .find(|c: char| "<>=!~".contains(c))
                .unwrap_or_else(|| panic!("unpinned requirement {l:?}"));
            (l[..i].to_lowercase().replace('-', "_"), l[i..].to_owned())
        })
        .collect()
}

#[test]
fn dockerfiles_pin_bases_and_packages_and_run_as_non_root() {
    let workspace = std::fs::read_to_string(
        std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../Cargo.toml"),
    )
    .unwrap();
    for name in ["hub", "gateway", "singleuser", "kernel-python", "kernel-r"] {
        let text = read(&format!("{name}/Dockerfile"));
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert!(!froms.is_empty(), "{name}: no FROM");
        for f in &froms {
            let image = f.split_whitespace().nth(1).unwrap();
            let tag = image
                .split(':')
                .nth(1)
                .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
            assert!(
                tag != "latest" && tag.chars().filter(char::is_ascii_digit).count() >= 3,
                "{name}: base image {image} is not pinned to a version"
            );
        }
        if ["hub", "gateway", "singleuser", "kernel-python"].contains(&name) {
            assert!(froms.len() >= 2, "{name}: not multi-stage");
        }
        let user = text
            .lines()
            .rev()
            .find(|l| l.starts_with("USER "))
            .unwrap_or_else(|| panic!("{name}: no USER"));
        let uid: u32 = user[5..]
            .split(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {user} not numeric"));
        assert!(uid >= 1000, "{name}: runs as uid {uid}");
        // apt packages pinned with =VERSION.
        for l in text.lines().filter(|l| l.contains("apt-get install")) {
            for pkg in l
                .split_whitespace()
                .skip_while(|w| *w != "--no-install-recommends")
                .skip(1)
            {
                if pkg == "\\" || pkg == "&&" {
                    break;
                }
                assert!(pkg.contains('='), "{name}: apt package {pkg} not pinned");
            }
        }
        if text.contains("cargo build") {
            assert!(
                text.contains("--locked"),
                "{name}: cargo build without --locked"
            );
            // The builder's Rust is at least the workspace's rust-version.
            let need = workspace
                .lines()
                .find(|l| l.starts_with("rust-version"))
                .unwrap()
                .split('"')
                .nth(1)
                .unwrap();
            let have = froms[0]
                .split(':')
                .nth(1)
                .unwrap()
                .split('-')
                .next()
                .unwrap();
            assert!(
                version(have) >= version(need),
                "{name}: rust {have} < rust-version {need}"
            );
        }
    }
    // Kernel images carry the kernel-side launcher where the Kubernetes launcher calls it, and
    // their default command reads the connection file it writes.
    for name in ["kernel-python", "kernel-r"] {
        let text = read(&format!("{name}/Dockerfile"));
        assert!(
            text.contains(&format!(
                "COPY images/kernel-launcher/{KERNEL_LAUNCHER} /usr/local/bin/{KERNEL_LAUNCHER}"
            )),
            "{name}"
        );
        assert!(
            text.contains(CONNECTION_FILE),
            "{name}: default command does not read {CONNECTION_FILE}"
        );
    }
}

#[test]
fn image_pins_satisfy_what_the_scripts_install() {
    let scripts = requirements(
        &std::fs::read_to_string(images().join("../scripts/requirements.txt")).unwrap(),
    );
    let single = requirements(&read("singleuser/requirements.txt"));
    let kernel = requirements(&read("kernel-python/requirements.txt"));
    // The hub image's services environment (the idle culler).
    let services = requirements(&read("hub/requirements.txt"));
    for (pkg, range) in &scripts {
        let pin = single
            .iter()
            .chain(&services)
            .find(|(p, _)| p == pkg)
            .unwrap_or_else(|| panic!("neither the singleuser nor the hub image pins {pkg}"));
        let v = pin
            .1
            .strip_prefix("==")
            .unwrap_or_else(|| panic!("{pkg} not pinned with =="));
        assert!(
            satisfies(v, range),
            "an image pins {pkg}=={v}, scripts install {range}"
        );
    }
    for (pkg, pin) in single.iter().chain(&kernel).chain(&services) {
        assert!(pin.starts_with("=="), "{pkg} {pin} not pinned");
    }
    // The kernel image's ipykernel is the single-user image's.
    let k = kernel.iter().find(|(p, _)| p == "ipykernel").unwrap();
    let s = single.iter().find(|(p, _)| p == "ipykernel").unwrap();
    assert_eq!(k.1, s.1);
    assert!(satisfies("6.30.0", ">=6.29,<8") && !satisfies("8.0", ">=6.29,<8"));
}

/// The full Lab's extensions (issue 21): the scripts' venv and the singleuser image carry the Git
/// panel, the S3 browser (jupyter-fs with fsspec/s3fs), the Dask panel, its server proxy and the
/// Dask Gateway client its clusters are (issue 20), at the same versions (checked above); the
/// image has `git` for the Git panel and the hub's server configuration (its Lab settings and the
/// S3 credential_process among it) where the hub points servers.
#[test]
fn the_singleuser_image_carries_the_full_labs_extensions_git_and_settings() {
    let scripts = requirements(
        &std::fs::read_to_string(images().join("../scripts/requirements.txt")).unwrap(),
    );
    let single = requirements(&read("singleuser/requirements.txt"));
    for pkg in [
        "jupyterlab_git",
        "jupyter_fs[fsspec]",
        "s3fs",
        "dask_labextension",
        "jupyter_server_proxy",
        "dask_gateway",
    ] {
        assert!(
            scripts.iter().any(|(p, _)| p == pkg),
            "scripts/requirements.txt lacks {pkg}"
        );
        assert!(
            single.iter().any(|(p, _)| p == pkg),
            "singleuser/requirements.txt lacks {pkg}"
        );
    }
    let docker = read("singleuser/Dockerfile");
    assert!(
        docker
            .lines()
            .any(|l| l.contains("apt-get install") && l.contains(" git=")),
        "singleuser/Dockerfile does not install a pinned git"
    );
    assert!(
        docker.contains("COPY hub/share/server/ /etc/stackhub/server/"),
        "singleuser/Dockerfile does not carry the hub's server configuration"
    );
    let server = images().join("../hub/share/server");
    for f in [
        "stackhub_s3.py",
        "stackhub_s3_credentials.py",
        "stackhub_lab.py",
        "overrides.json",
    ] {
        assert!(server.join(f).exists(), "hub/share/server/{f} missing");
    }
    let overrides: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(server.join("overrides.json")).unwrap())
            .unwrap();
    let notification = &overrides["@jupyterlab/apputils-extension:notification"];
    assert_eq!(notification["fetchNews"], "false");
    assert_eq!(notification["checkForUpdates"], false);
}

/// The Python DEDL pins: the kernel-python image's are scripts/requirements-dedl.txt's, one for
/// one; the singleuser image installs that file as /opt/python-dedl with a kernelspec
/// `python_dedl` like the one `scripts/lib.sh` (ensure_dedl_env) writes into the project venv.
#[test]
fn the_python_dedl_environment_is_the_same_in_scripts_and_images() {
    let scripts = requirements(
        &std::fs::read_to_string(images().join("../scripts/requirements-dedl.txt")).unwrap(),
    );
    let kernel = requirements(&read("kernel-python/requirements.txt"));
    for (pkg, pin) in &scripts {
        assert!(
            pin.starts_with("==") && !pin.contains(','),
            "scripts/requirements-dedl.txt: {pkg}{pin} is not pinned with =="
        );
    }
    let mut a = scripts.clone();
    let mut b = kernel.clone();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "images/kernel-python/requirements.txt and scripts/requirements-dedl.txt pin different versions"
    );
    for need in [
        "destinelab",
        "earthkit_data",
        "pystac_client",
        "xarray",
        "zarr",
        "s3fs",
        "boto3",
        "dask[distributed]",
        "dask_gateway",
        "matplotlib",
        "ipykernel",
    ] {
        assert!(
            scripts.iter().any(|(p, _)| p == need),
            "scripts/requirements-dedl.txt lacks {need}"
        );
    }
    let single = read("singleuser/Dockerfile");
    for line in [
        "COPY images/kernel-python/requirements.txt /tmp/requirements-dedl.txt",
        "/opt/python-dedl/bin/pip install --no-cache-dir -r /tmp/requirements-dedl.txt",
        "COPY --from=build /opt/python-dedl /opt/python-dedl",
        "COPY images/singleuser/python_dedl/kernel.json /opt/venv/share/jupyter/kernels/python_dedl/kernel.json",
    ] {
        assert!(
            single.contains(line),
            "singleuser/Dockerfile lacks {line:?}"
        );
    }
    let image_spec: serde_json::Value =
        serde_json::from_str(&read("singleuser/python_dedl/kernel.json")).unwrap();
    assert_eq!(image_spec["argv"][0], "/opt/python-dedl/bin/python");
    // What scripts/test installed (ensure_dedl_env): the same spec but for the environment's path.
    let venv = std::env::var_os("STACKHUB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| images().join("../.venv"));
    let installed = venv.join("share/jupyter/kernels/python_dedl/kernel.json");
    let text = std::fs::read_to_string(&installed).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; scripts/test installs it (scripts/lib.sh ensure_dedl_env)",
            installed.display()
        )
    });
    let mut local: serde_json::Value = serde_json::from_str(&text).unwrap();
    let python = local["argv"][0].as_str().unwrap().to_owned();
    assert!(
        python.ends_with("/bin/python") && Path::new(&python).exists(),
        "{}: argv[0] {python} is no environment's python",
        installed.display()
    );
    local["argv"][0] = image_spec["argv"][0].clone();
    assert_eq!(local, image_spec, "{}", installed.display());
    assert_eq!(image_spec["display_name"], "Python DEDL");
}

/// The kernel-python image is the bridge-site chart's default Dask image: the Kubernetes Dask
/// launcher runs `python -m dask scheduler|worker` there with the dask-gateway preload and
/// the dashboard. So the image pins distributed, dask-gateway and bokeh, its `python` is the
/// venv's, and those commands run in the Python DEDL environment (the same pins, checked
/// above).
#[test]
fn the_kernel_python_image_runs_dask_scheduler_and_worker_pods() {
    let kernel = requirements(&read("kernel-python/requirements.txt"));
    for need in ["distributed", "dask_gateway", "bokeh"] {
        assert!(
            kernel.iter().any(|(p, _)| p == need),
            "kernel-python/requirements.txt lacks {need}"
        );
    }
    assert!(read("kernel-python/Dockerfile").contains("ENV PATH=/opt/venv/bin:$PATH"));
    let venv = std::env::var_os("STACKHUB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| images().join("../.venv"));
    let spec = venv.join("share/jupyter/kernels/python_dedl/kernel.json");
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&spec)
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/test", spec.display())),
    )
    .unwrap();
    let python = spec["argv"][0].as_str().unwrap();
    // `python -m dask scheduler|worker`, as the pods run them; the worker's interpreter also
    // imports the scheduler's preload and bokeh (two interpreters, not three).
    let worker = "import runpy, sys, dask_gateway.scheduler_preload, bokeh\n\
                  sys.argv = ['dask', 'worker', '--help']\n\
                  runpy.run_module('dask', run_name='__main__')";
    for (args, option) in [
        (
            ["-m", "dask", "scheduler", "--help"].as_slice(),
            "--preload",
        ),
        (["-c", worker].as_slice(), "--memory-limit"),
    ] {
        let out = Command::new(python).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(option),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// images/kernel-r pins the Debian packages scripts/lib.sh (ensure_r_kernel) installs, at the
/// versions installed here (scripts/test installs them from the same Debian release).
#[test]
fn the_r_kernel_image_pins_the_debian_packages_the_scripts_install() {
    let lib = std::fs::read_to_string(images().join("../scripts/lib.sh")).unwrap();
    let wanted: Vec<&str> = lib
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("apt_install --no-install-recommends r-base-core")
        })
        .map(|rest| {
            std::iter::once("r-base-core")
                .chain(rest.split_whitespace())
                .collect()
        })
        .expect("scripts/lib.sh installs no r-base-core");
    let text = read("kernel-r/Dockerfile");
    let pins: Vec<(&str, &str)> = text
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(p, _)| p.starts_with("r-"))
        .collect();
    let mut pinned: Vec<&str> = pins.iter().map(|(p, _)| *p).collect();
    pinned.sort_unstable();
    let mut want = wanted.clone();
    want.sort_unstable();
    assert_eq!(pinned, want, "kernel-r/Dockerfile and scripts/lib.sh");
    for (pkg, pin) in pins {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", pkg])
            .output()
            .unwrap();
        let installed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !installed.is_empty(),
            "{pkg} is not installed here (scripts/test installs it: scripts/lib.sh ensure_r_kernel)"
        );
        assert_eq!(
            installed, pin,
            "kernel-r/Dockerfile pins {pkg}={pin}, Debian here has {installed}"
        );
    }
}

fn launcher_script() -> PathBuf {
    images().join("kernel-launcher").join(KERNEL_LAUNCHER)
}

#[test]
fn the_kernel_side_launcher_refuses_a_bad_environment_by_name() {
    for (ports, key, needle) in [
        ("", "k", "STACKHUB_KERNEL_PORTS is not set"),
        ("1,2,3", "k", "5 comma-separated ports"),
        ("1,2,x,4,5", "k", "'x' is not a port"),
        ("1,2,3,4,5", "", "STACKHUB_KERNEL_KEY is not set"),
    ] {
        let out = Command::new("sh")
            .arg(launcher_script())
            .args(["--", "true"])
            .env("STACKHUB_KERNEL_PORTS", ports)
            .env("STACKHUB_KERNEL_KEY", key)
            .env(
                "STACKHUB_KERNEL_CONNECTION_FILE",
                std::env::temp_dir().join("never.json"),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{ports:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("k\n"), "the key is never printed");
    }
}

use stackhub_e2e::support::free_ports;

#[test]
fn the_kernel_side_launcher_starts_a_real_kernel_a_client_can_use() {
    let python = common::venv_python();
    let dir = std::env::temp_dir().join(format!("kernel-launcher-{}", std::process::id()));
    let file = dir.join("conn/connection.json");
    let ports = free_ports(5);
    let ports_env = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let mut kernel = Command::new("sh")
        .arg(launcher_script())
        .arg("--")
        .arg(&python)
        .args(["-m", "ipykernel_launcher", "-f"])
        .arg(&file)
        .env("STACKHUB_KERNEL_PORTS", &ports_env)
        .env("STACKHUB_KERNEL_KEY", key)
        .env("STACKHUB_KERNEL_IP", "127.0.0.1")
        .env("STACKHUB_KERNEL_CONNECTION_FILE", &file)
        .env("STACKHUB_KERNEL_NAME", "python3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = r#"
import json, sys
from jupyter_client import BlockingKernelClient
info = json.load(open(sys.argv[1]))
assert info["key"] == sys.argv[2] and info["transport"] == "tcp", info
c = BlockingKernelClient()
c.load_connection_info(info)
c.start_channels()
c.wait_for_ready(timeout=60)
reply = c.execute_interactive("1+1", timeout=30, output_hook=lambda m: m["msg_type"] == "execute_result" and print(m["content"]["data"]["text/plain"]))
print(reply["content"]["status"])
"#;
    // Wait for the file, then talk to the kernel with the key it was given.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection file written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(
        mode & 0o077,
        0,
        "connection file readable by others: {mode:o}"
    );
    let out = Command::new(&python)
        .args(["-c", client])
        .arg(&file)
        .arg(key)
        .output()
        .unwrap();
    let _ = kernel.kill();
    let _ = kernel.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>(),
        ["2", "ok"],
        "{stdout}"
    );
}
