//! Generates the `pb.gubernator` messages and services from `proto/` and a file descriptor set for
//! gRPC reflection. Needs `protoc` (Debian: `protobuf-compiler`).
//!
//! Also records what `ringlimit --version` prints: the git commit (`git rev-parse --short HEAD`, or
//! `RINGLIMIT_GIT_COMMIT` when set, e.g. by an image build without `.git`, else `unknown`) and the
//! build date (UTC, from `SOURCE_DATE_EPOCH` when set). A build never fails for want of git. The
//! script runs again when HEAD moves: it watches the HEAD file and the branch's ref as git itself
//! locates them (`git rev-parse --git-path`, right in worktrees, where `.git` is a file).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/gubernator.proto",
        "proto/peers.proto",
        // ringlimit's own services (package `ringlimit.v1`): `AllowV1`, the owner side of `/allow`.
        "proto/allow.proto",
        "proto/handoff.proto",
        "proto/admin.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        // prost's codec, decoding each message from one slice (src/grpc_codec.rs).
        .codec_path("crate::grpc_codec::SliceCodec")
        .file_descriptor_set_path(out_dir.join("gubernator_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    envoy_rls_reflection(&out_dir)?;
    build_info();
    Ok(())
}

/// The descriptor set gRPC reflection lists for Envoy's rate limit service (`src/rls/`). The code
/// uses the envoy-types crate's generated types; `proto/reflection/` holds only the wire shape of
/// the service's messages, so reflection clients can list and describe it. The Rust generated from
/// it goes to a directory of its own and is not used.
fn envoy_rls_reflection(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/reflection/envoy/service/ratelimit/v3/rls.proto",
        "proto/reflection/envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        "proto/reflection/envoy/config/core/v3/base.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let unused = out_dir.join("envoy_rls_unused");
    std::fs::create_dir_all(&unused)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .out_dir(&unused)
        .file_descriptor_set_path(out_dir.join("envoy_rls_descriptor.bin"))
        .compile_protos(&protos, &["proto/reflection"])?;
    Ok(())
}

/// Sets `RINGLIMIT_GIT_COMMIT` and `RINGLIMIT_BUILD_DATE` for the crate.
fn build_info() {
    println!("cargo:rerun-if-env-changed=RINGLIMIT_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = env::var("RINGLIMIT_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RINGLIMIT_GIT_COMMIT={}", commit.trim());
    for path in watched_git_files() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let seconds = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|epoch| epoch.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=RINGLIMIT_BUILD_DATE={}", utc_date(seconds));
}

/// The output of `git args`, when git runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// HEAD, the ref it points to and `packed-refs`, as paths that exist (a missing path would make
/// cargo run this script on every build).
fn watched_git_files() -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        names.push(reference);
    }
    names
        .iter()
        .filter_map(|name| git(&["rev-parse", "--git-path", name]))
        .map(PathBuf::from)
        .filter_map(|path| {
            if path.is_file() {
                return Some(path);
            }
            // A branch that lives only in packed-refs gets a loose file at its next commit:
            // watch the directory it will appear in.
            path.parent()
                .filter(|parent| parent.is_dir() && parent != &Path::new(""))
                .map(Path::to_path_buf)
        })
        .collect()
}

/// `YYYY-MM-DD` of a Unix time (UTC), by the days-to-civil algorithm.
fn utc_date(seconds: u64) -> String {
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
