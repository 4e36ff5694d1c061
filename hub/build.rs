//! Link flags for the `stackhub` binary.

fn main() {
    // Relative relocations packed as RELR (glibc >= 2.36, Debian 12): the dynamic loader reads
    // a few KiB instead of a 1.6 MB `.rela.dyn` at every start, and those pages no longer stay
    // resident (`bench/run scale` measures the hub's RSS).
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo::rustc-link-arg-bin=stackhub=-Wl,-z,pack-relative-relocs");
    }
}
