//! `crds/*.yaml` must be exactly what `spindle crd` generates from
//! `operator/src/api/`, so the committed CRDs (what the Helm chart and the
//! cluster tests install) never drift from the Rust types.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

const REGENERATE: &str = "regenerate with `cargo run -p spindle -- crd --out-dir crds`";

fn crds_dir() -> PathBuf {
    // Run time first: a binary reused from a shared target dir may come from another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../crds")
}

/// Line number and both lines of the first difference.
fn first_difference(have: &str, want: &str) -> String {
    let (mut h, mut w) = (have.lines(), want.lines());
    for n in 1.. {
        match (h.next(), w.next()) {
            (None, None) => return "only line endings differ".into(),
            (a, b) if a == b => continue,
            (a, b) => return format!("line {n}: committed {a:?}, generated {b:?}"),
        }
    }
    unreachable!()
}

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = crds_dir();
    let mut expected = BTreeSet::new();
    for crd in spindle::api::crds() {
        let file = spindle::api::crd_file_name(&crd);
        let want = spindle::api::crd_yaml(&crd).expect("serialize CRD");
        let have = std::fs::read_to_string(dir.join(&file))
            .unwrap_or_else(|e| panic!("crds/{file} cannot be read ({e}); {REGENERATE}"));
        assert!(
            have == want,
            "crds/{file} is out of date ({}); {REGENERATE}",
            first_difference(&have, &want)
        );
        expected.insert(file);
    }
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("list crds/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let stale: Vec<_> = present.difference(&expected).collect();
    assert!(
        stale.is_empty(),
        "crds/ has files no CRD generates: {stale:?}; delete them and {REGENERATE}"
    );
}

#[test]
fn crd_subcommand_prints_the_committed_files() {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("crd")
        .output()
        .expect("run spindle crd");
    assert!(
        out.status.success(),
        "spindle crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = String::new();
    for crd in spindle::api::crds() {
        let file = spindle::api::crd_file_name(&crd);
        want.push_str("---\n");
        want.push_str(
            &std::fs::read_to_string(crds_dir().join(&file)).expect("read committed CRD"),
        );
    }
    let have = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        have == want,
        "`spindle crd` differs from crds/ ({}); {REGENERATE}",
        first_difference(&want, &have)
    );
}
